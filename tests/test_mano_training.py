"""The MANO head end to end: training with the stand-in (mixed with COCO-format photos that
have no camera), run.py's 3D evaluation, mesh panels and the own-image demo's mesh and .obj,
and the command-line guards (--mano_model auto / a missing path / MANO weights without a
head / a perspective camera without K)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import run
from models.mano_head import MissingCameraError
from tests.test_coco import write_coco
from tests.tiny_runs import tiny_synth_root
from training.checkpoint import BEST_NAME, load_checkpoint
from training.engine import forward_batch
from training.train_seednet_fastflow import cli, main


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny easy synthetic set and a tiny COCO-format set (no camera, no 3D)."""
    root = tiny_synth_root(tmp_path_factory, num_train=16, num_test=4)
    write_coco(root / "photos", n=8, size=96)
    return root


def args(data_root: Path, out: Path, *extra: str) -> list[str]:
    return ["--data_root", str(data_root), "--datasets", "synth", "coco", "--coco_json",
            str(data_root / "photos"), "--preset", "small", "-b", "4", "-tb", "8", "-j", "0",
            "--device", "cpu", "--val_fraction", "0.25", "--epochs", "1",
            "--max_steps_per_epoch", "2", "-ckp", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps with the stand-in MANO head on synthetic frames and COCO-format photos."""
    out = tmp_path_factory.mktemp("ckp")
    main(args(data_root, out, "--mano_model", "synthetic", "--val_datasets", "synth"))
    return out


def test_training_logs_mano_terms_and_validation(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    for name in ("mano_2d", "mano_3d", "mano_pose_prior", "mano_shape_prior"):
        assert np.isfinite(last[f"train_{name}"])
    for key in ("val_mano_pck", "val_mano_auc", "val_mano_mpjpe_mm", "val_mano_auc3d"):
        assert last[key] is not None and np.isfinite(last[key])
    ckpt = load_checkpoint(trained / BEST_NAME)
    model_cfg = ckpt["config"]["model"]
    assert model_cfg["mano_enabled"] and model_cfg["mano_model"] == "synthetic"
    assert any(k.startswith("mano.") for k in ckpt["model"])
    assert not any(k.startswith("mano.layer") for k in ckpt["model"])  # no MANO arrays


def test_run_py_3d_metrics_vis_and_predictions(trained: Path, data_root: Path,
                                               tmp_path: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "eval"
    assert run.main(["--checkpoint", str(trained), "--fine_tune", "synth", "--data_root",
                     str(data_root), "--device", "cpu", "-j", "0", "-b", "4", "--out", str(out),
                     "--vis", "--max_vis", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "== MANO head (synthetic stand-in, NOT MANO)" in printed
    assert "MPJPE (root-relative, wrist)" in printed and "AUC 20-50 mm" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mano"]["standin"] is True and "NOT MANO" in metrics["mano"]["note"]
    m3 = metrics["metrics_3d"]
    assert m3["num_samples"] == 4
    for key in ("mpjpe_mm", "pa_mpjpe_mm", "bihand_auc_20_50", "zb_auc_0_50"):
        assert np.isfinite(m3[key])
    assert len(m3["per_joint"]["mpjpe_mm"]) == 21
    assert 0.0 <= metrics["metrics_mano_2d"]["pck"] <= 1.0
    preds = json.loads((out / "predictions.json").read_text())
    block = preds[0]["mano"]
    assert np.array(block["joints_m"]).shape == (21, 3)
    assert np.array(block["kp2d_px"]).shape == (21, 2)
    assert len(block["betas"]) == 10 and np.array(block["pose"]).shape == (16, 6)
    assert block["perspective"] is True and block["mpjpe_mm"] is not None
    grid = cv2.imread(str(out / "vis" / "batch_0000.png"))
    assert grid.shape[1] == 8 * 256  # six panels + the mesh and the side view

    # COCO-format photos: no camera (weak perspective), no 3D labels, 2D metrics only.
    out = tmp_path / "eval_coco"
    assert run.main(["--checkpoint", str(trained), "--fine_tune", "coco", "--coco_json",
                     str(data_root / "photos"), "--device", "cpu", "-j", "0",
                     "--out", str(out)]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics_3d"] is None and "no sample" in metrics["metrics_3d_note"]
    preds = json.loads((out / "predictions.json").read_text())
    assert preds[0]["mano"]["perspective"] is False and preds[0]["mano"]["mpjpe_mm"] is None


def test_run_py_mano_fit_steps(trained: Path, data_root: Path, tmp_path: Path,
                               capsys) -> None:  # fmt: skip
    def projected(out: Path, *flags: str) -> np.ndarray:
        assert run.main(["--checkpoint", str(trained), "--fine_tune", "synth", "--data_root",
                         str(data_root), "--device", "cpu", "-j", "0", "-b", "4", "--out",
                         str(out), *flags]) == 0  # fmt: skip
        preds = json.loads((out / "predictions.json").read_text())
        return np.array([p["mano"]["kp2d_px"] for p in preds])

    plain = projected(tmp_path / "plain", "--mano_fit_steps", "0")
    fitted = projected(tmp_path / "fit", "--mano_fit_steps", "10")
    assert plain.shape == fitted.shape and not np.allclose(plain, fitted)
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert np.isfinite(metrics["metrics_mano_2d"]["epe_mean_px"])
    assert run.main(["--checkpoint", str(trained), "--mano_fit_steps", "-1"]) == 2
    assert "--mano_fit_steps must be >= 0" in capsys.readouterr().err


def test_auto_without_mano_is_off_and_says_why(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="training"):
        result = main(args(data_root, tmp_path / "ckp", "--mano_model", "auto",
                           "--max_steps_per_epoch", "1", "--no-val_before_training"))
    assert result.model.mano is None
    lines = [r.getMessage() for r in caplog.records if "MANO head off" in r.getMessage()]
    assert len(lines) == 1 and "MANO_RIGHT.pkl" in lines[0] and "\n" not in lines[0]


def test_command_line_guards(data_root: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no_such_mano"
    assert cli(args(data_root, tmp_path / "a", "--mano_model", str(missing))) == 2
    err = capsys.readouterr().err
    assert f"--mano_model {missing}: no such file or folder" in err
    assert cli(args(data_root, tmp_path / "b", "--loss_mano_2d", "1")) == 2
    assert "--loss_mano_2d need the MANO head" in capsys.readouterr().err
    wrong = tmp_path / "MANO_RIGHT.pkl"
    wrong.write_bytes(b"\x80\x04K\x01.")  # a pickle of the int 1
    assert cli(args(data_root, tmp_path / "c", "--mano_model", str(wrong))) == 2
    assert f"{wrong}: holds a int, not a dict" in capsys.readouterr().err


def test_perspective_camera_names_frames_without_k(trained: Path) -> None:
    from models import build_model

    ckpt = load_checkpoint(trained / BEST_NAME)
    cfg = dict(ckpt["config"]["model"], mano_camera="perspective")
    model = build_model(cfg)
    K = torch.eye(3).repeat(2, 1, 1)
    K[1] = float("nan")
    batch = {"image": torch.rand(2, 3, 128, 128), "K": K, "dataset": ["synth", "coco/photos"],
             "frame_id": torch.tensor([3, 7])}
    with pytest.raises(MissingCameraError, match=r"frames without K: coco/photos:7"):
        forward_batch(model, batch)


def test_non_finite_rotations_skip_the_step(data_root: Path) -> None:
    """The head's guard raises FloatingPointError naming the rotations; the training loop
    skips such a step as it does a non-finite loss (weights untouched)."""
    from datasets import build_dataset
    from models import MANO_DEFAULT_WEIGHTS, HandFlowCriterion, ModelConfig, build_model
    from training.engine import train_one_epoch

    cfg = ModelConfig.preset("small", mano_enabled=True, mano_model="synthetic")
    model = build_model(cfg)
    with torch.no_grad():
        model.mano.encoder[0].weight[0, 0] = float("nan")  # NaN reaches the head only
    ds = build_dataset("synth", data_root, "train", train_aug=False, input_size=128,
                       heatmap_size=32, cache_dir=False)  # fmt: skip
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.seednet.named_parameters()}
    with pytest.warns(RuntimeWarning, match=r"non-finite predicted rotations \(rot6d\).*"
                      r"frames .*synth:\d+"):
        result = train_one_epoch(model, HandFlowCriterion(MANO_DEFAULT_WEIGHTS), loader,
                                 optimizer, device=torch.device("cpu"), epoch=0, max_steps=2,
                                 max_nonfinite_steps=3, show_progress=False)  # fmt: skip
    assert result.progress.skipped_steps == 2
    assert all(torch.equal(before[k], v) for k, v in model.seednet.named_parameters())
