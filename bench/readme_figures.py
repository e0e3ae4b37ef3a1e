"""The README's pictures of the photo and video paths, made with run.py itself.

Run from the repo root (default: the shipped model in checkpoints/pretrained):

    .venv/bin/python -m bench.readme_figures [--checkpoint DIR] [--out assets] [--threads 1]

* ``pretrained_examples.png``: the four held-out example photos with the hand box about
  their centre 128 px and the side given (what `make demo` runs), overlays side by side.
* ``two_hands_example.png``: `run.py --image assets/examples/two_hands.jpg --max_hands 2`
  (no box, no side given: the hands are found and their sides decided by the model).
* ``clip_frames_example.png``: four frames of `run.py --video clip.mp4 --save_video` on a
  clip that pans slowly across the same photo (`bench.bench_detect.write_panning_clip`: a
  camera moving over a still photo, not a recorded video), with the tracked hands drawn.

Both are written only through run.py's outputs (the overlay PNG and the annotated video).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import cv2
import numpy as np

import run
from bench.bench_detect import CLIP_PHOTO, CLIP_SCENE_WIDTH, write_panning_clip
from utils.image_io import read_image_rgb

EXAMPLES = Path("assets/examples")
EXAMPLE_SIDES = (("open_palm", "right"), ("sign_five", "right"), ("fist_left", "left"),
                 ("thumb_outdoor", "left"))  # fmt: skip
CLIP_FRAMES = 24
SHOWN_FRAMES = (0, 8, 16, 23)


def quiet_run(argv: list[str]) -> None:
    """run.main with its printed lines suppressed; SystemExit on failure."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = run.main(argv)
    if code != 0:
        raise SystemExit(f"run.py {' '.join(argv)} failed (exit {code})")


def write_png(path: Path, image_bgr: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image_bgr):
        raise SystemExit(f"cannot write {path}")


def video_frames(path: Path, indices: tuple[int, ...]) -> list[np.ndarray]:
    """The BGR frames ``indices`` of a video."""
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while len(frames) < len(indices):
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"{path}: ended after {index} frames, wanted frame {indices[-1]}")
        if index in indices:
            frames.append(frame)
        index += 1
    capture.release()
    return frames


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    p.add_argument("--out", default=Path("assets"), type=Path)
    p.add_argument("--threads", type=int, default=1, help="torch threads of run.py")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = ["--threads", str(args.threads)]
    if args.checkpoint:
        model += ["--checkpoint", args.checkpoint]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, side in EXAMPLE_SIDES:
            quiet_run(["--image", str(EXAMPLES / f"{name}.jpg"), "--side", side, "--bbox", "64",
                       "64", "128", "128", "--out", str(tmp / "examples"), *model])  # fmt: skip
        strip = [cv2.imread(str(tmp / "examples" / f"{name}_overlay.png"))
                 for name, _ in EXAMPLE_SIDES]  # fmt: skip
        write_png(args.out / "pretrained_examples.png", np.concatenate(strip, axis=1))
        quiet_run(["--image", str(CLIP_PHOTO), "--max_hands", "2", "--out", str(tmp), *model])
        overlay = cv2.imread(str(tmp / f"{CLIP_PHOTO.stem}_overlay.png"))
        write_png(args.out / "two_hands_example.png", overlay)
        clip = write_panning_clip(read_image_rgb(CLIP_PHOTO), tmp / "clip.mp4", CLIP_FRAMES,
                                  scene_width=CLIP_SCENE_WIDTH, fps=12.0)
        quiet_run(["--video", str(clip), "--save_video", "--max_hands", "2", "--out", str(tmp),
                   *model])  # fmt: skip
        frames = video_frames(tmp / "clip_overlay.mp4", SHOWN_FRAMES)
        write_png(args.out / "clip_frames_example.png", np.concatenate(frames, axis=1))
    print(f"wrote {args.out / 'pretrained_examples.png'}, {args.out / 'two_hands_example.png'} "
          f"and {args.out / 'clip_frames_example.png'}")


if __name__ == "__main__":
    main()
