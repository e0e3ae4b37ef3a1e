"""Training: command line, a two-step run evaluated by run.py, overfitting one batch,
the non-finite-loss guard and a bad image file surfacing from a loader worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import run
from datasets import ImageReadError, build_dataset
from models import HandFlowCriterion, ModelConfig, build_model, init_from
from tests.tiny_runs import tiny_synth_root, tiny_train_flags
from training.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    snapshot_name,
)
from training.config import TrainConfig, config_from_args, validate_config
from training.engine import (
    EpochProgress,
    TrainingDivergedError,
    native_bf16,
    resolve_precision,
    train_one_epoch,
)
from training.train_seednet_fastflow import main
from training.trainer import model_config_from, warn_compat_flags
from utils.crop import crop_to_original
from utils.heatmap import HeatmapCodec
from utils.metrics import gt_bbox_size, pck_mmpose


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny easy synthetic set (RHD format only) shared by this module's tests."""
    return tiny_synth_root(tmp_path_factory, num_train=24, num_test=4)


def tiny_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    """Flags of a seconds-long CPU run on the tiny set."""
    return tiny_train_flags(data_root, out, *extra, batch=4, val_fraction=0.25)


def test_ancestor_flags_and_precedence(tmp_path: Path) -> None:
    cfg = config_from_args(
        ["-hgs", "1", "--hg-blocks", "2", "-nj", "21", "-ckp", "out", "-sp", "run", "-j", "0",
         "-se", "0", "-b", "4", "-tb", "2", "-lr", "0.01", "--lr_decay_step", "7",
         "--gamma", "0.5", "--snapshot", "3", "--net_modules", "seed", "--ups_loss",
         "--datasets", "rhd", "stb", "--data_root", "/d", "--epochs", "9",
         "--resume_seednet_pth", "a.pth.tar", "--evaluate_seednet_pth", "b.pth.tar"]
    )  # fmt: skip
    assert (cfg.hg_stacks, cfg.hg_blocks, cfg.train_batch, cfg.test_batch) == (1, 2, 4, 2)
    assert (cfg.learning_rate, cfg.lr_decay_step, cfg.gamma) == (0.01, 7, 0.5)
    assert (cfg.checkpoint, cfg.saved_prefix, cfg.snapshot) == ("out", "run", 3)
    assert cfg.datasets == ["rhd", "stb"] and cfg.epochs == 9
    assert (cfg.resume_seednet_pth, cfg.evaluate_seednet_pth) == ("a.pth.tar", "b.pth.tar")

    # Preset < YAML file < command line.
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(yaml.safe_dump({"train_batch": 3, "learning_rate": 0.5}))
    cfg = config_from_args(["--preset", "small", "--config", str(yaml_file), "-lr", "0.25"])
    small = TrainConfig.from_dict({"preset": "small"})
    assert cfg.train_batch == 3 and cfg.learning_rate == 0.25
    assert cfg.epochs != small.epochs  # the small preset's training defaults applied

    yaml_file.write_text(yaml.safe_dump({"train_btach": 3}))
    with pytest.raises(ValueError, match="train_btach"):
        config_from_args(["--config", str(yaml_file)])


def test_flow_flags_reach_the_model_config() -> None:
    cfg = config_from_args(["--preset", "small", "--flow_input", "heatmaps", "--flow_pool", "2"])
    mcfg = model_config_from(cfg)
    assert (mcfg.flow_input, mcfg.flow_pool, mcfg.flow_channels) == ("heatmaps", 2, 22)
    assert model_config_from(config_from_args(["--preset", "small"])).flow_input == "features"
    with pytest.raises(SystemExit):
        config_from_args(["--flow_input", "latent"])


def test_compat_flags_warn() -> None:
    cfg = TrainConfig(net_modules=["seed", "lift"], ups_loss=False, amp=True)
    with pytest.warns(UserWarning) as record:
        warn_compat_flags(cfg, torch.device("cpu"))
    text = " ".join(str(w.message) for w in record)
    assert "lift" in text and "ups_loss" in text and "CUDA only" in text


def test_two_step_training_writes_checkpoint_run_py_evaluates(
    data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ckp"
    result = main(tiny_args(data_root, out, "--epochs", "1", "--max_steps_per_epoch", "2",
                            "--snapshot", "1"))  # fmt: skip
    for name in (BEST_NAME, LAST_NAME, snapshot_name("ckp_seednet", 1), "config.yaml",
                 "metrics.jsonl", "curves.png"):  # fmt: skip
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]  # untrained, then after epoch 1
    assert rows[1]["global_step"] == 2 and np.isfinite(rows[1]["train_total"])
    assert 0.0 <= rows[1]["val_auc"] <= 1.0

    ckpt = load_checkpoint(out / BEST_NAME)
    assert ckpt["epoch"] == 1 and ckpt["config"]["model"]["preset_name"] == "small"
    assert not any(k.startswith("module.") for k in ckpt["model"])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["train_batch"] == 4 and saved["model"]["input_size"] == 128
    trained = result.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in ckpt["model"].items())

    # --evaluate_seednet_pth re-scores the checkpoint on the same validation split.
    evaluated = main(tiny_args(data_root, tmp_path / "unused", "--evaluate_seednet_pth",
                               str(out / BEST_NAME)))  # fmt: skip
    assert evaluated.best_val_auc == rows[1]["val_auc"]

    eval_out = tmp_path / "eval"
    code = run.main(["--checkpoint", str(out), "--fine_tune", "synth", "--data_root",
                     str(data_root), "--device", "cpu", "-j", "0", "-b", "4",
                     "--out", str(eval_out)])  # fmt: skip
    assert code == 0
    assert any(eval_out.iterdir())


def test_init_weights_fine_tunes_a_checkpoint_with_new_heads(data_root: Path,
                                                              tmp_path: Path) -> None:
    source = tmp_path / "source"
    main(tiny_args(data_root, source, "--epochs", "1", "--max_steps_per_epoch", "1"))
    src = load_checkpoint(source / LAST_NAME)["model"]
    out = tmp_path / "tuned"
    # A learning rate of 1e-12: the copied weights stay what they were after one step.
    result = main(tiny_args(data_root, out, "--init_weights", str(source), "--mano_model",
                            "synthetic", "--flow_input", "heatmaps", "--epochs", "1",
                            "--max_steps_per_epoch", "1", "-lr", "1e-12"))  # fmt: skip
    tuned = result.model
    assert tuned.mano is not None and tuned.cfg.flow_input == "heatmaps"
    for name, param in tuned.seednet.named_parameters():
        torch.testing.assert_close(param.detach(), src[f"seednet.{name}"].float())
    # The flow now models 22 heatmap channels: it starts fresh, not from the feature flow.
    assert all(src[f"flow.{k}"].shape != v.shape for k, v in tuned.flow.state_dict().items()
               if f"flow.{k}" in src and v.ndim == 4 and "w_perm" not in k)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["init_weights"] == str(source)
    assert saved["model"]["mano_enabled"] and saved["model"]["preset_name"] == "small"

    # Another input size: the convolutions carry over, heatmaps follow the new size.
    finer = main(tiny_args(data_root, tmp_path / "finer", "--init_weights", str(source),
                           "--input_size", "192", "--epochs", "1", "--max_steps_per_epoch",
                           "1", "-lr", "1e-12")).model  # fmt: skip
    assert (finer.cfg.input_size, finer.cfg.heatmap_size) == (192, 48)
    for name, param in finer.seednet.named_parameters():
        torch.testing.assert_close(param.detach(), src[f"seednet.{name}"].float())
    assert finer.eval()(torch.zeros(1, 3, 192, 192)).heatmaps[-1].shape[-1] == 48
    with pytest.raises(ValueError, match="input_size must be divisible by"):
        model_config_from(config_from_args(["--preset", "small", "--input_size", "160"]))

    with pytest.raises(ValueError, match="architecture is the file's"):
        config_and_validate(["--init_weights", str(source), "-hgs", "1"])
    with pytest.raises(ValueError, match="no such file or folder"):
        config_and_validate(["--init_weights", str(tmp_path / "missing")])


def test_init_from_refuses_another_backbone() -> None:
    small = build_model(ModelConfig.preset("small"))
    wider = build_model(ModelConfig.preset("small", channels=32))
    with pytest.raises(CheckpointError, match="does not fit the new model"):
        init_from(small, wider, "wider.pth.tar")
    report = init_from(small, build_model(ModelConfig.preset("small", flow_enabled=False)), "x")
    assert (report.copied, report.fresh, report.dropped) == (["seednet"], ["flow"], [])


def config_and_validate(argv: list[str]) -> TrainConfig:
    """config_from_args then validate_config, as the training CLI runs them."""
    cfg = config_from_args(argv)
    validate_config(cfg)
    return cfg


def test_time_budget_stops_with_validation_and_checkpoint(data_root: Path, tmp_path: Path
                                                          ) -> None:  # fmt: skip
    # A budget shorter than one validation: the run stops before its first step, but still
    # validates and leaves a resumable checkpoint for run.py.
    out = tmp_path / "ckp"
    result = main(tiny_args(data_root, out, "--time_budget_min", "0.0001", "--epochs", "3"))
    assert result.stopped_by_budget
    ckpt = load_checkpoint(out / LAST_NAME)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 0)
    assert (out / BEST_NAME).is_file()


@pytest.mark.parametrize("native", [False, True])
def test_precision_auto_is_bf16_only_where_native(data_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  native: bool) -> None:  # fmt: skip
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert native_bf16(cpu) is native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    out = tmp_path / "ckp"
    main(tiny_args(data_root, out, "--precision", "auto", "--time_budget_min", "0.0001"))
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["precision"] == ("bf16" if native else "fp32")
    if not native:
        with pytest.warns(UserWarning, match="without native bf16"):
            main(tiny_args(data_root, tmp_path / "bf16", "--precision", "bf16",
                           "--time_budget_min", "0.0001"))  # fmt: skip


def _pck(output_heatmaps: torch.Tensor, batch: dict, codec: HeatmapCodec) -> float:
    """MMPose PCK@0.2 of last-stack heatmaps, in original-image pixels."""
    kp_crop, _ = codec.decode_torch(output_heatmaps.detach())
    kp_orig = crop_to_original(kp_crop.numpy(), batch["affine"].numpy())
    gt = batch["kp2d_orig_px"].numpy()
    norm = gt_bbox_size(gt, batch["orig_size_wh"].numpy())
    return pck_mmpose(kp_orig, gt, batch["visible"].numpy(), norm)[0]


@pytest.mark.slow
def test_overfit_single_batch(data_root: Path) -> None:
    """Small preset, one batch of 8, model in train mode: the heatmap loss at least halves
    and PCK@0.2 on the batch reaches 1.0 (about 135 steps here)."""
    torch.manual_seed(0)
    mcfg = ModelConfig.preset("small")
    ds = build_dataset("synth", data_root, "train", train_aug=False, input_size=mcfg.input_size,
                       heatmap_size=mcfg.heatmap_size, cache_dir=False)  # fmt: skip
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    model = build_model(mcfg).train()
    criterion = HandFlowCriterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    codec = HeatmapCodec(mcfg.input_size, mcfg.heatmap_size)
    first_loss, loss, pck = None, float("inf"), 0.0
    for _ in range(300):
        output = model(batch["image"])  # train mode: the PCK is of this very forward pass
        terms = criterion(output, batch)
        loss = float(terms["heatmap"].detach())
        first_loss = loss if first_loss is None else first_loss
        pck = _pck(output.heatmaps[-1], batch, codec)
        if pck == 1.0 and loss <= 0.5 * first_loss:
            break
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
    assert loss <= 0.5 * first_loss
    assert pck == 1.0


class _NaNCriterion(HandFlowCriterion):
    """Raises like the real criterion does on a non-finite term."""

    def forward(self, output, batch):  # type: ignore[override]
        raise FloatingPointError("non-finite heatmap loss: nan")


def test_nonfinite_loss_skips_with_warning_then_stops(data_root: Path) -> None:
    mcfg = ModelConfig.preset("small", flow_enabled=False)
    ds = build_dataset("synth", data_root, "train", train_aug=False, input_size=mcfg.input_size,
                       heatmap_size=mcfg.heatmap_size, cache_dir=False)  # fmt: skip
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    model = build_model(mcfg)
    before = {k: v.clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.warns(RuntimeWarning, match=r"heatmap loss.*frames .*synth:\d+"):
        result = train_one_epoch(model, _NaNCriterion(), loader, optimizer,
                                 device=torch.device("cpu"), epoch=0, max_steps=2,
                                 max_nonfinite_steps=3, show_progress=False)  # fmt: skip
    assert result.progress.skipped_steps == 2
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    with pytest.raises(TrainingDivergedError, match="3 consecutive"), pytest.warns(
        RuntimeWarning
    ):
        train_one_epoch(model, _NaNCriterion(), loader, optimizer, device=torch.device("cpu"),
                        epoch=1, progress=EpochProgress(), max_nonfinite_steps=3,
                        show_progress=False)  # fmt: skip


def test_bad_image_in_worker_surfaces(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    color = root / "SYNTH" / "RHD" / "RHD_published_v2" / "training" / "color"
    for png in sorted(color.glob("*.png")):
        png.write_bytes(b"not a png")
    # The worker's error is re-raised in the main process with its type and message.
    with pytest.raises(ImageReadError, match=r"color/\d+\.png: cannot decode") as info:
        main(tiny_args(root, tmp_path / "ckp", "-j", "2", "--epochs", "1",
                       "--max_steps_per_epoch", "1", "--no-val_before_training"))  # fmt: skip
    assert "DataLoader worker" in str(info.value)


def test_cli_missing_dataset_is_one_clear_message(tmp_path: Path) -> None:
    """Run by path, as users do: no traceback, exit code 2, the missing folder named."""
    script = Path(__file__).resolve().parents[1] / "training" / "train_seednet_fastflow.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--datasets", "rhd", "--data_root", str(tmp_path),
         "-ckp", str(tmp_path / "ckp"), "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "RHD_published_v2: RHD root folder not found" in proc.stderr
    assert "Expected layout" in proc.stderr and "Traceback" not in proc.stderr
