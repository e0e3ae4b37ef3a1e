"""The CUDA paths: the same model, training and evaluation on a GPU as on the CPU.

They run where a CUDA device is present (`bench/gpu_session.sh` runs them first on a lent GPU
machine) and are skipped elsewhere with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import run
from models import build_model, load_model, prepare_for_inference
from tests.tiny_runs import tiny_synth_root, tiny_train_flags
from training.checkpoint import BEST_NAME
from training.engine import resolve_precision
from training.train_seednet_fastflow import main
from utils.predictor import Predictor
from utils.tta import TestTimeViews

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device (bench/gpu_session.sh runs these on a "
                                "GPU machine)")  # fmt: skip

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synth_root(tmp_path_factory, num_train=24, num_test=8)


@pytest.fixture(autouse=True)
def _exact_float32():
    """Full float32 in matrix products and convolutions (no TF32), so CUDA and CPU agree."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_auto_precision_is_bf16_on_an_ampere_or_newer_gpu() -> None:
    if torch.cuda.get_device_capability(CUDA)[0] < 8:
        pytest.skip(f"{torch.cuda.get_device_name(CUDA)} predates bf16 units (Ampere)")
    assert resolve_precision("auto", CUDA) == "bf16"


@pytest.mark.parametrize("preset", ["small", "real"])
def test_inference_on_cuda_matches_the_cpu(preset: str) -> None:
    model = build_model(preset).eval()
    images = torch.rand(3, 3, model.cfg.input_size, model.cfg.input_size)
    with torch.no_grad():
        expected = model(images)
        prepare_for_inference(model.to(CUDA))
        got = model(images.to(CUDA))
    torch.testing.assert_close(got.heatmaps[-1].cpu(), expected.heatmaps[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.masks[-1].cpu(), expected.masks[-1], atol=1e-4, rtol=0)
    loglik = expected.flow.log_likelihood
    torch.testing.assert_close(got.flow.log_likelihood.cpu(), loglik,
                               atol=1e-4 * float(loglik.abs().max()), rtol=0)  # fmt: skip


def test_test_time_views_warp_on_cuda_as_on_the_cpu() -> None:
    model = build_model("small").eval()
    size = model.cfg.input_size
    crops = torch.rand(2, 3, size, size)
    affines = np.stack([np.eye(3)] * 2)
    views = TestTimeViews()
    expected = Predictor.from_model(model, views=views).run_crops(crops, affines).kp2d_px
    prepare_for_inference(model.to(CUDA))
    got = Predictor.from_model(model, views=views).run_crops(crops.to(CUDA), affines).kp2d_px
    np.testing.assert_allclose(got, expected, atol=1e-2)


def test_bf16_autocast_on_cuda_stays_near_float32() -> None:
    model = build_model("real").eval().to(CUDA)
    images = torch.rand(4, 3, 128, 128, device=CUDA)
    with torch.no_grad():
        full = model(images).heatmaps[-1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(images).heatmaps[-1]
    assert torch.isfinite(half).all()
    assert float((half.float() - full).abs().max()) < 0.05 * float(full.abs().max()) + 1e-3


@pytest.mark.parametrize("precision", [("--precision", "auto"), ("--precision", "fp32", "--amp")],
                         ids=["auto", "fp16_amp"])  # fmt: skip
def test_training_on_cuda_writes_a_checkpoint_the_cpu_evaluates(
    data_root: Path, tmp_path: Path, precision: tuple[str, ...]
) -> None:
    out = tmp_path / "ckp"
    result = main(tiny_train_flags(data_root, out, "--device", "cuda", "--epochs", "1",
                                   "--max_steps_per_epoch", "3", *precision))  # fmt: skip
    assert next(result.model.parameters()).device.type == "cuda"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["global_step"] == 3 and np.isfinite(rows[-1]["train_total"])

    model, _ = load_model(out / BEST_NAME)  # on the CPU
    assert next(model.parameters()).device.type == "cpu"
    scores = {}
    for device in ("cpu", "cuda"):
        eval_out = tmp_path / f"eval_{device}"
        assert run.main(["--checkpoint", str(out), "--fine_tune", "synth", "--data_root",
                         str(data_root), "--device", device, "--precision", "fp32", "-j", "0",
                         "-b", "4", "--out", str(eval_out)]) == 0  # fmt: skip
        scores[device] = json.loads((eval_out / "metrics.json").read_text())["metrics"]
    for key in ("pck", "auc", "epe_mean_px"):
        cpu, gpu = scores["cpu"].get(key), scores["cuda"].get(key)
        assert cpu is not None and gpu == pytest.approx(cpu, abs=1e-3), key
