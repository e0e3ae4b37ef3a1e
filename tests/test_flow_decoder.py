"""The ancestor's flow design (cfg.flow_decoder): the final heatmaps and mask decoded from the
flow's latent, what their loss reaches, the config checks, training, run.py and the ONNX
export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run
from models import HandFlowCriterion, ModelConfig, build_model, prepare_for_inference
from tests.tiny_runs import tiny_synth_root, tiny_train_flags
from training.train_seednet_fastflow import main as train_main


def decoder_cfg(**overrides) -> ModelConfig:
    return ModelConfig.preset("small", input_size=64, flow_decoder=True, flow_pool=1, **overrides)


def test_the_final_stage_is_decoded_from_the_latent() -> None:
    torch.manual_seed(0)
    model = build_model(decoder_cfg()).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
        hm, mask = model.flow_decoder(out.flow.z)
    assert len(out.heatmaps) == len(out.masks) == model.cfg.nstacks + 1
    assert torch.equal(out.heatmaps[-1], hm) and torch.equal(out.masks[-1], mask)
    assert hm.shape == (2, 21, 16, 16) and mask.shape == (2, 1, 16, 16)


@pytest.mark.parametrize("detach", [True, False])
def test_the_decoded_stage_trains_the_flow_and_reaches_seednet_only_undetached(
        detach: bool) -> None:  # fmt: skip
    torch.manual_seed(0)
    model = build_model(decoder_cfg(flow_detach=detach)).train()
    out = model(torch.rand(2, 3, 64, 64))
    out.heatmaps[-1].square().mean().backward()  # the decoded stage's heatmaps only
    flow_grads = [p.grad for p in model.flow.parameters() if p.requires_grad]
    assert all(g is not None for g in flow_grads) and any(g.abs().sum() > 0 for g in flow_grads)
    seednet_grad = model.seednet.conv1.weight.grad
    assert (seednet_grad is None) == detach


def test_the_criterion_supervises_the_decoded_stage() -> None:
    torch.manual_seed(0)
    model = build_model(decoder_cfg()).train()
    out = model(torch.rand(2, 3, 64, 64))
    batch = {"heatmaps": torch.zeros(2, 21, 16, 16), "heatmap_weights": torch.ones(2, 21),
             "mask": torch.zeros(2, 1, 16, 16), "has_mask": torch.ones(2, dtype=torch.bool)}
    with_decoder = HandFlowCriterion()(out, batch)["heatmap"]
    out.heatmaps.pop()
    out.masks.pop()
    assert with_decoder > HandFlowCriterion()(out, batch)["heatmap"]


def test_the_flow_can_be_skipped_only_when_nothing_is_decoded_from_it() -> None:
    image = torch.rand(1, 3, 64, 64)
    plain = build_model(ModelConfig.preset("small", input_size=64)).eval()
    with torch.no_grad():
        assert plain(image, with_flow=False).flow is None
    with pytest.raises(ValueError, match="with_flow=False is not possible"):
        build_model(decoder_cfg()).eval()(image, with_flow=False)


def test_flow_decoder_needs_a_feature_flow() -> None:
    with pytest.raises(ValueError, match="needs the flow head"):
        ModelConfig.preset("small", flow_decoder=True, flow_enabled=False)
    with pytest.raises(ValueError, match="needs flow_input 'features'"):
        ModelConfig.preset("small", flow_decoder=True, flow_input="heatmaps")


def test_training_and_run_py_with_the_flow_decoder(tmp_path_factory: pytest.TempPathFactory,
                                                   tmp_path: Path) -> None:  # fmt: skip
    data_root = tiny_synth_root(tmp_path_factory, num_train=8, num_test=4)
    out = tmp_path / "ckp"
    train_main(tiny_train_flags(data_root, out, "--flow_decoder", "--no-flow_detach",
                                "--flow_pool", "1", "--epochs", "1", "--max_steps_per_epoch",
                                "2"))  # fmt: skip
    saved = torch.load(out / "ckp_seednet_all.pth.tar", weights_only=True)
    assert saved["config"]["model"]["flow_decoder"] is True
    assert any(k.startswith("flow_decoder.") for k in saved["model"])
    eval_out = tmp_path / "eval"
    assert run.main(["--checkpoint", str(out), "--fine_tune", "synth", "--data_root",
                     str(data_root), "--device", "cpu", "-j", "0", "--out",
                     str(eval_out)]) == 0  # fmt: skip
    metrics = json.loads((eval_out / "metrics.json").read_text())
    assert metrics["num_samples"] == 4 and metrics["model_config"]["flow_decoder"] is True


def test_the_onnx_export_keeps_the_flow_of_a_decoder_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install "
                        "-r requirements-onnx.txt")  # fmt: skip
    from models.export_onnx import ABS_TOLERANCE, OnnxExportError, export_onnx

    torch.manual_seed(0)
    model = prepare_for_inference(build_model(decoder_cfg()))
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report.flow_exported and report.max_abs_diff["heatmaps"] < ABS_TOLERANCE
    with pytest.raises(OnnxExportError, match="cannot be left out"):
        export_onnx(model, tmp_path / "n.onnx", with_flow=False)
