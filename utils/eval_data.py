"""The data of an evaluation: a dataset split framed as the checkpoint's training framed its
crops, its loader, and crops without a hand.

`utils.eval_cli.eval_data` builds an `EvalDataConfig` from run.py's flags; the errors are
`EvalDataError`s (a ValueError) whose message says what is missing and how to get it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

import datasets
from datasets.negatives import build_nohand_dataset
from datasets.synthetic import DEFAULT_DIFFICULTY
from models.config import ModelConfig
from utils.image_io import AnnotationFormatError, DatasetLayoutError

DOWNLOAD_HINT = (
    "How to get the data: RHD from https://lmb.informatik.uni-freiburg.de/projects/hand3d/ "
    "(unpack RHD_published_v2 into <data_root>/RHD/), STB from "
    "https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset (into <data_root>/STB/); "
    "or evaluate on the built-in synthetic set with --fine_tune synth (generated on first use)."
)


class EvalDataError(ValueError):
    """The evaluation data cannot be built: a missing folder or split, an empty selection."""


@dataclass(frozen=True)
class EvalDataConfig:
    """What to evaluate on.

    Attributes:
        dataset: a registry name (`datasets.REGISTRY`).
        data_root: folder holding RHD/, STB/ and SYNTH/ (shown in messages as given).
        split: 'train' | 'val' | 'test'.
        frame_ids: only these frame ids (None: all).
        options: the reader-specific options (RHD's hands, STB's camera, COCO's files).
        batch_size: samples per batch.
        workers: data loading workers (and synthetic generation processes, at least 1).
        synth_num_test: evaluation frames generated when the synthetic set is missing.
        synth_difficulty: their difficulty ('easy' | 'hard').
    """

    dataset: str
    data_root: str | Path
    split: str
    frame_ids: list[int] | None = None
    options: datasets.ReaderOptions = field(default_factory=datasets.ReaderOptions)
    batch_size: int = 8
    workers: int = 2
    synth_num_test: int = 300
    synth_difficulty: str = DEFAULT_DIFFICULTY


def build_eval_dataset(data: EvalDataConfig, cfg: ModelConfig,
                       data_cfg: Mapping[str, Any]) -> Dataset:  # fmt: skip
    """The evaluation dataset at the model's input size, framed as the checkpoint's training
    framed its crops (``data_cfg``: config['data']); generates the synthetic set's evaluation
    split when it is missing."""
    from datasets.rhd import SPLIT_FOLDERS

    data_root = Path(data.data_root)
    if data.dataset == "synth":
        split_dir = datasets.dataset_root("synth", data_root) / SPLIT_FOLDERS[data.split]
        if not (split_dir / "color").is_dir():
            synth_root = data_root / "SYNTH"
            if data.split != "test":
                raise EvalDataError(
                    f"synthetic {data.split} frames not found in {split_dir}: generate them "
                    f"with `python -m datasets.synthetic --out {synth_root} --num_train 2000`"
                )
            from datasets import synthetic

            print(f"synthetic evaluation set not found at {split_dir}: generating "
                  f"{data.synth_num_test} frames, as `python -m datasets.synthetic --out "
                  f"{synth_root} --num_train 0 --num_test {data.synth_num_test} --seed 0 "
                  f"--difficulty {data.synth_difficulty} --no_stb` would", flush=True)
            synthetic.generate(synth_root, num_train=0, num_test=data.synth_num_test, seed=0,
                               difficulty=data.synth_difficulty, stb=False,
                               workers=max(1, data.workers))
    elif data.dataset == "synth_stb":
        stb_root = datasets.dataset_root("synth_stb", data_root)
        if not stb_root.is_dir():
            raise EvalDataError(
                f"synthetic STB set not found at {stb_root}: generate it with "
                f"`python -m datasets.synthetic --out {data_root / 'SYNTH'}`"
            )
    elif data.dataset == "coco" and not data.options.coco_json:
        raise EvalDataError("--fine_tune coco needs --coco_json FILE [FILE ...]")
    elif data.dataset != "coco" and not data_root.is_dir():
        raise EvalDataError(
            f"data root {data_root} does not exist: expected {data_root}/RHD/RHD_published_v2 "
            f"(RHD) or {data_root}/STB (STB).\n{DOWNLOAD_HINT}"
        )
    return datasets.build_dataset(data.dataset, data_root, data.split, train_aug=False,
                                  frame_ids=data.frame_ids, input_size=cfg.input_size,
                                  sigma=data_cfg.get("sigma", 2.0),
                                  crop_factor=data_cfg.get("crop_factor", 2.0),
                                  options=data.options)  # fmt: skip


def eval_loader(data: EvalDataConfig, cfg: ModelConfig,
                data_cfg: Mapping[str, Any] | None) -> tuple[Dataset, DataLoader]:  # fmt: skip
    """The evaluation dataset (`build_eval_dataset`) and its loader, in order.

    Raises:
        EvalDataError: the data is missing (with the download hint) or the selection empty.
    """
    try:
        dataset = build_eval_dataset(data, cfg, data_cfg or {})
    except DatasetLayoutError as e:
        raise EvalDataError(f"{e}\n{DOWNLOAD_HINT}") from e
    if len(dataset) == 0:
        raise EvalDataError(f"{data.dataset} split {data.split!r} under {data.data_root} is "
                            f"empty")  # fmt: skip
    loader = DataLoader(dataset, batch_size=data.batch_size, shuffle=False,
                        num_workers=data.workers, persistent_workers=False)  # fmt: skip
    return dataset, loader


def nohand_loader(input_size: int, coco_files: Sequence[str], num: int, seed: int, *,
                  batch_size: int, workers: int) -> DataLoader:  # fmt: skip
    """Crops without a hand (`datasets.negatives.NoHandDataset`, the loader's ``dataset``):
    ``num`` synthetic backgrounds, plus as many background patches of ``coco_files``.

    Raises:
        EvalDataError: a COCO file is malformed.
    """
    try:
        negatives = build_nohand_dataset(
            input_size, coco_files=coco_files, num_real=num if coco_files else 0,
            num_synthetic=num, seed=seed,
        )  # fmt: skip
    except AnnotationFormatError as e:
        raise EvalDataError(f"--nohand_coco: {e}") from e
    return DataLoader(negatives, batch_size=batch_size, shuffle=False, num_workers=workers)
