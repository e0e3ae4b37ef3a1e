"""The own-image demo: photos, folders and videos in, overlays and JSON out.

`run_images` takes image files and folders (`expand_image_inputs`: a folder's images,
sorted by name, non-recursive) and writes, per image, ``<name>_overlay.png`` (the hands
drawn on the image) and ``<name>.json`` (every hand: side, box, keypoints, scores); a model
with a MANO head adds ``<name>_hand<k>_mesh.png`` and ``<name>_hand<k>.obj`` per hand
(`write_meshes`) and a ``mano`` block to each hand's record. An
unreadable image named on the command line is an error; one inside a folder is reported,
skipped and counted at the end, so one bad file does not stop a folder.

`run_video` reads a video with OpenCV, tracks the hands from frame to frame
(`utils.track.HandTracker`) and writes ``<name>.jsonl`` (one line per frame: frame, time,
whether the full detection ran, and every hand with side, keypoints and scores) and, with
``save_video``, ``<name>_overlay.mp4`` (mp4v). An unreadable or empty video and a frame size
that changes mid-video are errors naming the file (and the frame).

Where the hands come from (`locate`): a given box (one hand), the whole image as the crop
(one hand), or `utils.localize.detect_hands` (up to max_hands, or "no hand found").
Everything is written inside the output folder only.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.mano_head import mano_label
from utils import vis
from utils.image_header import image_size_from_header
from utils.image_io import ImageReadError, ImageTooLargeError, check_image_pixels, read_image_rgb
from utils.jsonio import JsonLinesWriter, write_json
from utils.localize import DetectConfig, Detection, detect_hands, resolve_hand_score
from utils.mano_eval import demo_mano_outputs
from utils.predictor import HandPrediction, Predictor
from utils.progress import progress_bar
from utils.track import FrameHands, HandTracker, TrackConfig
from utils.tta import TestTimeViews

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_FOURCC = "mp4v"
DEFAULT_FPS = 30.0  # written videos whose source does not say its frame rate


class DemoInputError(ValueError):
    """A user-facing problem with an input file (the message names it)."""


# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInput:
    """One image to process.

    Attributes:
        path: the file.
        folder: the folder it was found in (None: named on the command line).
    """

    path: Path
    folder: Path | None = None


def expand_image_inputs(paths: Sequence[str | Path]) -> list[ImageInput]:
    """Files as given, folders as their images (`IMAGE_EXTENSIONS`, sorted, not recursive).

    Raises DemoInputError for a missing path or a folder without images.
    """
    out: list[ImageInput] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)  # fmt: skip
            if not found:
                raise DemoInputError(f"folder {path} holds no image (looked for "
                                     f"{', '.join(IMAGE_EXTENSIONS)} files, not in sub-folders)")
            out.extend(ImageInput(p, folder=path) for p in found)
        elif path.is_file():
            out.append(ImageInput(path))
        else:
            raise DemoInputError(f"image not found: {path}")
    return out


def output_stems(paths: Sequence[Path]) -> list[str]:
    """One distinct output name per input image, so no result overwrites another.

    The file stem when it is unique; images of the same name get their parent folders'
    names in front, as many as needed (a/hand.png, b/hand.png -> a_hand, b_hand); the same
    file given twice gets a number (hand, hand_2).
    """
    absolute = [Path(os.path.abspath(p)) for p in paths]
    parts = [a.parent.parts[1:] if a.anchor else a.parent.parts for a in absolute]
    stems = [Path(p).stem for p in paths]
    names = list(stems)
    for stem in set(stems):
        group = [i for i, s in enumerate(stems) if s == stem]
        depth = 0
        distinct = len({absolute[i] for i in group})
        while len({names[i] for i in group}) < distinct and depth < max(
                len(parts[i]) for i in group):  # fmt: skip
            depth += 1
            for i in group:
                names[i] = "_".join([*parts[i][-depth:], stem])
    seen: set[str] = set()
    for i, name in enumerate(names):
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        names[i] = candidate
        seen.add(candidate)
    return names


def check_box_inside(box_xywh: Sequence[float] | None, width: int, height: int,
                     image_path: Path) -> None:  # fmt: skip
    """A given hand box must lie inside the image (a box outside it frames no hand)."""
    if box_xywh is None:
        return
    x, y, w, h = box_xywh
    if x + w > width or y + h > height:
        raise DemoInputError(
            f"--bbox {x:g} {y:g} {w:g} {h:g} is outside {image_path} ({width} x {height} "
            f"pixels): the box must lie inside the image, X + W <= {width} and "
            f"Y + H <= {height}")


def read_image(path: Path, max_pixels: int | None, box_xywh: Sequence[float] | None
               ) -> np.ndarray:  # fmt: skip
    """Decode one image (RGB uint8); DemoInputError / ImageTooLargeError naming the file."""
    size = image_size_from_header(path)
    if size is not None:
        check_image_pixels(path, *size, limit=max_pixels)
    try:
        image = read_image_rgb(path, max_pixels=max_pixels)
    except ImageTooLargeError:
        raise
    except ImageReadError as e:
        raise DemoInputError(f"cannot decode image {path}: not an image OpenCV can read "
                             "(PNG, JPEG, ...) or the file is truncated") from e  # fmt: skip
    check_box_inside(box_xywh, image.shape[1], image.shape[0], path)
    return image


# --- one image ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    """What the demo does with each image or frame.

    Attributes:
        side: 'left' / 'right' forces the side of every hand; None lets the model decide.
        box_xywh: one given hand box (original pixels); None: find the hands.
        whole_image: the whole image is the one hand crop (no localisation).
        detect: localisation thresholds (`utils.localize.DetectConfig`).
        track: video tracking (`utils.track.TrackConfig`).
        max_pixels: refuse larger images before decoding (None: the default limit).
        save_video: also write the annotated video.
    """

    side: str | None = None
    box_xywh: tuple[float, float, float, float] | None = None
    whole_image: bool = False
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    max_pixels: int | None = None
    save_video: bool = False

    @property
    def mode(self) -> str:
        """'box', 'whole_image' or 'detect'."""
        if self.box_xywh is not None:
            return "box"
        return "whole_image" if self.whole_image else "detect"


def locate(predictor: Predictor, image_rgb: np.ndarray, options: DemoOptions) -> Detection:
    """The hands of one image: in the given box, the whole image, or found (`detect_hands`).

    A given box or the whole image always yields its one hand, with its presence score
    (`Detection.note` says when it is below the threshold)."""
    if options.mode == "detect":
        return detect_hands(predictor, image_rgb, options.detect, options.side)
    name, threshold = resolve_hand_score(predictor, options.detect)
    if options.mode == "box":
        hand = predictor.predict(image_rgb, [options.box_xywh], options.side)[0]
    else:
        hand = predictor.predict_whole_image(image_rgb, options.side)
    score = hand.score(name)
    return Detection(hands=[hand], hand_scores=[score], score_name=name, min_score=threshold,
                     candidates=[(hand, score)])  # fmt: skip


def given_hand_note(detection: Detection, mode: str) -> str | None:
    """For a given box / the whole image: a note when its hand scores below the threshold."""
    if mode == "detect" or not detection.hands or detection.hand_scores[0] >= detection.min_score:
        return detection.note
    where = "the given box" if mode == "box" else "the image"
    return (f"the hand in {where} scores {detection.hand_scores[0]:.3g} on "
            f"{detection.score_name}, below --min_hand_score {detection.min_score:g}: it may "
            "not show a hand")


def side_text(hand: HandPrediction) -> str:
    """'right (given)', 'left (p 0.97)' or 'left (model)'."""
    if hand.side_source == "given":
        return f"{hand.side} (given)"
    if hand.side_confidence is not None:
        return f"{hand.side} (p {hand.side_confidence:.2f})"
    return f"{hand.side} (model)"


def hand_label(index: int, hand: HandPrediction, score: float, score_name: str) -> str:
    """One overlay line per hand."""
    parts = [f"#{index} {side_text(hand)}", f"{score_name} {score:.2f}"]
    if hand.log_likelihood is not None and score_name != "flow_loglik":
        parts.append(f"log-lik {hand.log_likelihood:.1f}")
    return ", ".join(parts)


def draw_hands(image_rgb: np.ndarray, detection: Detection, title: str | None = None
               ) -> np.ndarray:  # fmt: skip
    """The image with every hand's skeleton, box and a label line per hand; with the residual
    flow head, a thin ring of the predicted error scale around each joint."""
    height, width = image_rgb.shape[:2]
    thick = max(2, round(max(width, height) / 200))
    overlay = np.ascontiguousarray(image_rgb).copy()
    for i, hand in enumerate(detection.hands):
        if hand.error_scale_px is not None:
            for (u, v), radius in zip(hand.kp2d_px, hand.error_scale_px, strict=True):
                cv2.circle(overlay, (round(float(u)), round(float(v))),
                           max(round(float(radius)), thick + 2), (235, 235, 235), 1, cv2.LINE_AA)
        colors = (None if hand.joint_confidence is None
                  else vis.confidence_colors(hand.joint_confidence))  # fmt: skip
        overlay = vis.draw_skeleton(overlay, hand.kp2d_px, thickness=thick, radius=thick + 1,
                                    joint_colors=colors)  # fmt: skip
        x, y, w, h = (round(float(v)) for v in hand.box_xywh)
        cv2.rectangle(overlay, (x, y), (x + max(w, 1) - 1, y + max(h, 1) - 1), (255, 255, 255), 1)
        cv2.putText(overlay, f"#{i}", (max(x, 0) + 2, max(y, 0) + 14), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (255, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
    head = title if title is not None else (
        f"{len(detection.hands)} hand{'s' if len(detection.hands) != 1 else ''}"
        if detection.hands else "no hand found")
    vis.put_label(overlay, head)
    for i, (hand, score) in enumerate(zip(detection.hands, detection.hand_scores, strict=True)):
        vis.put_label(overlay, hand_label(i, hand, score, detection.score_name), row=i + 1)
    return overlay


def hands_json(hands: Sequence[HandPrediction], scores: Sequence[float],
               compact: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Per-hand records: `HandPrediction.to_dict` plus the index and the presence score
    (``compact``: without the named keypoint list, which repeats kp2d_px and scores)."""
    out = []
    for i, (hand, score) in enumerate(zip(hands, scores, strict=True)):
        record = {"hand": i, "hand_score": score, **hand.to_dict()}
        if compact:
            record.pop("keypoints")
        out.append(record)
    return out


def image_record(path: Path, image_rgb: np.ndarray, detection: Detection,
                 options: DemoOptions, views: TestTimeViews | None = None
                 ) -> dict[str, Any]:  # fmt: skip
    """The JSON of one image (``views``: the predictor's test-time views, or None)."""
    height, width = image_rgb.shape[:2]
    return {
        "image": str(path), "image_size_wh": [width, height], "localisation": options.mode,
        "bbox_xywh": None if options.box_xywh is None else list(options.box_xywh),
        "side_forced": options.side, "hand_score_name": detection.score_name,
        "min_hand_score": detection.min_score, "num_hands": len(detection.hands),
        "note": given_hand_note(detection, options.mode),
        "test_time_views": None if views is None else views.to_dict(),
        "hands": hands_json(detection.hands, detection.hand_scores),
    }  # fmt: skip


def write_meshes(predictor: Predictor, image_rgb: np.ndarray, hands: Sequence[HandPrediction],
                 out: Path, stem: str) -> tuple[list[dict[str, Any] | None], list[Path]]:
    """Each hand's MANO outputs when the model has a MANO head (torch backend):
    ``<stem>_hand<k>_mesh.png`` (the mesh over the image, a side view of the 3D skeleton) and
    ``<stem>_hand<k>.obj`` (`utils.mano_eval.demo_mano_outputs`).

    Returns:
        per hand its JSON ``mano`` block (None without a head), and the files written.
    """
    faces = predictor.backend.mano_faces
    blocks: list[dict[str, Any] | None] = []
    written: list[Path] = []
    for k, hand in enumerate(hands):
        if hand.mano is None or faces is None:
            blocks.append(None)
            continue
        block, files = demo_mano_outputs(hand.mano, faces, hand.affine, image_rgb, hand.side,
                                         out, f"{stem}_hand{k}", mano_label(predictor.cfg))
        blocks.append(block)
        written += files
    return blocks, written


@dataclass
class ImagesSummary:
    """What `run_images` did.

    Attributes:
        written: files written.
        replaced: of those, files that existed before.
        processed: images processed.
        skipped: (image, reason) of the images of folders that could not be read.
        num_hands: hands found in all images.
        images_without_hand: images where no hand was found.
    """

    written: list[Path] = field(default_factory=list)
    replaced: int = 0
    processed: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    num_hands: int = 0
    images_without_hand: int = 0


def run_images(predictor: Predictor, inputs: Sequence[ImageInput], out: Path,
               options: DemoOptions, *, log: Callable[[str], None] = print,
               on_image: Callable[[Path], None] | None = None) -> ImagesSummary:  # fmt: skip
    """Overlay and JSON per image (module docstring); returns the summary.

    Args:
        predictor: the model.
        inputs: images (`expand_image_inputs`).
        out: the output folder (created by the caller).
        options: localisation and side.
        log: where the per-image lines go.
        on_image: called with each overlay written (e.g. to show it).
    """
    stems = output_stems([i.path for i in inputs])
    summary = ImagesSummary()
    bar = progress_bar(total=len(inputs), desc="images", unit="image",
                       disable=len(inputs) < 2)  # fmt: skip
    try:
        for item, stem in zip(inputs, stems, strict=True):
            bar.update(1)
            try:
                image = read_image(item.path, options.max_pixels, options.box_xywh)
            except (DemoInputError, ImageReadError) as e:
                if item.folder is None:
                    raise
                summary.skipped.append((item.path, str(e)))
                print(f"skipping {item.path}: {e}", file=sys.stderr)
                continue
            detection = locate(predictor, image, options)
            names = (f"{stem}_overlay.png", f"{stem}.json")
            summary.replaced += sum((out / name).exists() for name in names)
            overlay_path = vis.save_rgb(out / names[0], draw_hands(image, detection))
            record = image_record(item.path, image, detection, options, predictor.views)
            mano_blocks, mesh_files = write_meshes(predictor, image, detection.hands, out, stem)
            for hand_record, block in zip(record["hands"], mano_blocks, strict=True):
                if block is not None:
                    hand_record["mano"] = block
            json_path = write_json(out / names[1], record)
            summary.written += [overlay_path, json_path, *mesh_files]
            summary.processed += 1
            summary.num_hands += len(detection.hands)
            summary.images_without_hand += not detection.hands
            found = (", ".join(side_text(h) for h in detection.hands) if detection.hands
                     else "no hand found")  # fmt: skip
            log(f"{item.path}: wrote {overlay_path} and {json_path} ({found})")
            if on_image is not None:
                on_image(overlay_path)
    finally:
        bar.close()
    return summary


# --- videos -----------------------------------------------------------------------------------


@dataclass
class VideoSummary:
    """What `run_video` did.

    Attributes:
        path: the video.
        frames: frames processed.
        frames_with_hands: frames with at least one hand.
        detections: frames that ran the full detection (the others were tracked).
        seconds: wall time of the loop (decoding, model, drawing and writing included).
        jsonl_path: the JSON-lines file.
        video_path: the annotated video, or None.
        replaced: output files that existed before.
    """

    path: Path
    frames: int
    frames_with_hands: int
    detections: int
    seconds: float
    jsonl_path: Path
    video_path: Path | None
    replaced: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def open_video(path: Path) -> tuple[cv2.VideoCapture, float, int | None]:
    """(capture, frames per second, frame count or None); DemoInputError naming the file."""
    if not path.is_file():
        raise DemoInputError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise DemoInputError(f"video {path} is empty (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DemoInputError(f"cannot open video {path}: not a video OpenCV can read (mp4, avi, "
                             "mov, ...) or the file is damaged")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return capture, fps if fps > 0 and np.isfinite(fps) else DEFAULT_FPS, count or None


def video_frames(capture: cv2.VideoCapture, path: Path):
    """Yield (index, RGB frame); DemoInputError for no frame or a frame size change."""
    first_size = None
    index = 0
    while True:
        ok, frame_bgr = capture.read()
        if not ok or frame_bgr is None:
            break
        size = (frame_bgr.shape[1], frame_bgr.shape[0])
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise DemoInputError(
                f"video {path}: frame {index} is {size[0]} x {size[1]} pixels, frame 0 was "
                f"{first_size[0]} x {first_size[1]}: the frame size must not change within a "
                f"video (frames 0-{index - 1} were processed and written)")
        yield index, cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        index += 1
    if first_size is None:
        raise DemoInputError(f"video {path} has no frame OpenCV can decode (empty or damaged)")


def frame_record(index: int, fps: float, result: FrameHands, score_name: str
                 ) -> dict[str, Any]:  # fmt: skip
    """One JSON line of a video (``score_name``: what each hand's ``hand_score`` is)."""
    return {"frame": index, "time_s": round(index / fps, 4), "detected": result.detected,
            "num_hands": len(result.hands), "hand_score_name": score_name, "note": result.note,
            "hands": hands_json(result.hands, result.hand_scores, compact=True)}  # fmt: skip


def run_video(predictor: Predictor, path: Path, out: Path, options: DemoOptions, *,
              stem: str | None = None, log: Callable[[str], None] = print,
              show_progress: bool = True) -> VideoSummary:  # fmt: skip
    """Track the hands through a video and write its JSON lines (and annotated video).

    Args:
        predictor: the model.
        path: the video file.
        out: the output folder (created by the caller).
        options: localisation, side, tracking and ``save_video``.
        stem: output name (default: the video's stem).
        log: where the summary line goes.
        show_progress: a progress bar over the frames.
    """
    capture, fps, count = open_video(path)
    stem = stem or path.stem
    score_name, min_score = resolve_hand_score(predictor, options.detect)
    if options.mode == "detect":
        detect = partial(detect_hands, predictor, config=options.detect, side=options.side)
    else:
        detect = partial(locate, predictor, options=options)
    tracker = HandTracker(predictor, detect, score_name, min_score, options.track)
    jsonl_path = out / f"{stem}.jsonl"
    video_path = out / f"{stem}_overlay.mp4" if options.save_video else None
    replaced = sum(p is not None and p.exists() for p in (jsonl_path, video_path))
    writer = None
    frames = with_hands = 0
    start = time.perf_counter()
    bar = progress_bar(total=count, desc=f"video {path.name}", unit="frame",
                       disable=not show_progress)  # fmt: skip
    try:
        with JsonLinesWriter(jsonl_path) as lines:
            for index, frame in video_frames(capture, path):
                if options.box_xywh is not None and index == 0:
                    check_box_inside(options.box_xywh, frame.shape[1], frame.shape[0], path)
                result = tracker.step(frame)
                lines.write(frame_record(index, fps, result, score_name))
                frames += 1
                with_hands += bool(result.hands)
                if video_path is not None:
                    writer = writer or _video_writer(video_path, fps, frame.shape[1],
                                                     frame.shape[0])  # fmt: skip
                    det = Detection(result.hands, result.hand_scores, score_name, min_score)
                    title = f"frame {index}, {'detected' if result.detected else 'tracked'}"
                    overlay = draw_hands(frame, det, title)
                    writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                bar.update(1)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()
    summary = VideoSummary(path=path, frames=frames, frames_with_hands=with_hands,
                           detections=tracker.detections, seconds=time.perf_counter() - start,
                           jsonl_path=jsonl_path, video_path=video_path, replaced=replaced)
    written = f"{jsonl_path}" + (f" and {video_path}" if video_path is not None else "")
    log(f"{path}: {frames} frames, hands in {with_hands}, full detection on "
        f"{tracker.detections} ({summary.frames_per_s:.1f} frames/s); wrote {written}")
    return summary


def _video_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), fps,
                             (width, height))  # fmt: skip
    if not writer.isOpened():
        raise OSError(f"cannot write video {path} (OpenCV's {VIDEO_FOURCC} writer did not open)")
    return writer
