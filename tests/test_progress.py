"""Progress output: a tqdm bar on a terminal, a few whole lines in a log file."""

from __future__ import annotations

import io
import re
from pathlib import Path

from tqdm import tqdm

from utils.progress import LineProgress, progress_bar

REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_a_line_per_tenth_not_per_update() -> None:
    log = io.StringIO()
    clock = FakeClock()
    bar = LineProgress(total=1000, desc="epoch 1", file=log, clock=clock)
    for _ in range(1000):
        clock.t += 0.001  # 1 s in all: the 10 % rule alone decides
        bar.set_postfix({"total": "0.5"})
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 10  # 10 %, 20 %, ..., 100 %; close adds nothing new
    assert lines[0].startswith("epoch 1: 100/1000 (10 %)") and "total=0.5" in lines[0]
    assert lines[-1].startswith("epoch 1: 1000/1000 (100 %)")


def test_log_lines_of_a_slow_loop_are_spaced_in_time() -> None:
    log = io.StringIO()
    clock = FakeClock()
    bar = LineProgress(total=None, desc="val", file=log, clock=clock, interval_s=10.0)
    for _ in range(100):  # 100 s without a known total: one line per 10 s, then the end
        clock.t += 1.0
        bar.update(1)
    clock.t += 0.5
    bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[0].startswith("val: 10 ") and lines[-1].startswith("val: 101 ")


def test_progress_bar_picks_tqdm_on_a_terminal_lines_otherwise() -> None:
    assert isinstance(progress_bar(total=3, file=Terminal()), tqdm)
    assert isinstance(progress_bar(total=3, file=io.StringIO()), LineProgress)
    assert isinstance(progress_bar(total=3, file=io.StringIO(), disable=True), tqdm)
    log = io.StringIO()
    assert list(progress_bar(range(5), desc="eval", file=log)) == list(range(5))
    assert log.getvalue().splitlines()[-1].startswith("eval: 5/5 (100 %)")


def test_every_progress_bar_goes_through_the_helper() -> None:
    offenders = []
    for path in REPO_ROOT.rglob("*.py"):
        rel = path.relative_to(REPO_ROOT)
        if rel.parts[0] in (".venv", "data", "checkpoints") or rel == Path("utils/progress.py"):
            continue
        if rel.parts[0] == "tests":
            continue
        text = path.read_text()
        if re.search(r"^\s*(from tqdm|import tqdm)", text, flags=re.MULTILINE):
            offenders.append(str(rel))
    assert not offenders, f"use utils.progress.progress_bar instead of tqdm in {offenders}"
