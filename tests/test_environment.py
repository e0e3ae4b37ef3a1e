"""environment.yml (conda, GPU machines) installs exactly what requirements.txt pins."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(text: str) -> list[str]:
    """The requirement specifiers of a requirements.txt, comments and blanks dropped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def test_environment_yml_pins_what_requirements_txt_pins() -> None:
    requirements = requirement_lines((REPO_ROOT / "requirements.txt").read_text())
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs one pip section"
    assert sorted(pip_sections[0]) == sorted(requirements)
    assert "torch==2.13.0" in pip_sections[0]
    # Nothing from conda that pip also installs (a conda pytorch would be another torch).
    names = {d.split("=")[0].split(">")[0].split("<")[0].strip().lower() for d in conda_deps}
    assert names == {"python", "pip"}, f"conda installs more than python and pip: {conda_deps}"
