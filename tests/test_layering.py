"""The import layering: a ground floor in utils/ the packages build on, nothing pointing up.

Floors, bottom to top:
1. the ground floor (`GROUND`): utils modules that import nothing else of the project but
   each other: the joint convention, crop geometry, the heatmap codec, image reading, atomic
   writes, the restricted unpickler, metrics, ...;
2. `datasets/`, `manopth/`, `models/`: import the ground floor and the packages below them
   (`models` may use `datasets` and `manopth`, `datasets` may use `manopth`; never the
   reverse);
3. the application modules of utils (evaluator, predictor, the run.py pieces, ...) and
   `training/`, `bench/`, `run.py`: anything below.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("datasets", "manopth", "models", "training", "utils", "bench", "run")
GROUND = {
    "atomic", "checkpoint_io", "confidence", "crop", "errors", "geometry", "heatmap",
    "image_header", "image_io", "joints", "jsonio", "mesh_render", "metrics", "metrics3d",
    "presence_probe", "progress", "safe_pickle", "side_probe", "tta", "vis",
}
# What each middle package may import besides the ground floor.
BELOW = {"manopth": set(), "datasets": {"manopth"}, "models": {"datasets", "manopth"}}
# Tools inside a middle package that apply it to a dataset: they sit on the top floor.
APPLICATIONS = {"manopth/fit_rhd.py"}


def project_imports(path: Path) -> set[str]:
    """Dotted project modules a file imports ('utils.heatmap', 'datasets', ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


def utils_module(name: str) -> str | None:
    """'utils.heatmap' or 'utils.heatmap.X' -> 'heatmap'; None for other packages."""
    parts = name.split(".")
    return parts[1] if parts[0] == "utils" and len(parts) > 1 else None


def violations(path: Path, allowed_packages: set[str]) -> list[str]:
    """Imports of ``path`` outside the ground floor and ``allowed_packages``."""
    bad = []
    for name in sorted(project_imports(path)):
        top = name.split(".")[0]
        if top == "utils":
            module = utils_module(name)
            if module is not None and module not in GROUND:
                bad.append(name)
        elif top not in allowed_packages:
            bad.append(name)
    return bad


def test_the_ground_floor_imports_nothing_above_it() -> None:
    for module in sorted(GROUND):
        path = REPO / "utils" / f"{module}.py"
        assert path.is_file(), f"ground-floor module utils/{module}.py is missing"
        assert violations(path, set()) == [], f"utils/{module}.py imports above the ground floor"


def test_packages_import_only_the_floors_below() -> None:
    for package, below in BELOW.items():
        for path in sorted((REPO / package).rglob("*.py")):
            if str(path.relative_to(REPO)) in APPLICATIONS:
                continue
            assert violations(path, below | {package}) == [], (
                f"{path.relative_to(REPO)} imports above its floor")
