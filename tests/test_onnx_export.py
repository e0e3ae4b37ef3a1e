"""ONNX export (models/export_onnx.py) and the Predictor's onnxruntime backend, on tiny random
models: outputs within 1e-4 of PyTorch, the same keypoints and sides through the Predictor,
the run.py commands, a model without flow, the fallback when the flow does not trace, the side
probe's features in the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the ONNX extra is not installed: pip install -r "
                    "requirements-onnx.txt (make venv installs it)")  # fmt: skip
pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -r "
                    "requirements-onnx.txt (make venv installs it)")  # fmt: skip

import run  # noqa: E402
from models import ModelConfig, build_model, prepare_for_inference  # noqa: E402
from models import export_onnx as export_module  # noqa: E402
from models.export_onnx import ABS_TOLERANCE, REL_TOLERANCE, OnnxExportError, export_onnx  # noqa: E402
from models.runtime import (  # noqa: E402
    ONNX_META_SIDE_PROBE,
    BackendError,
    OnnxBackend,
    RawOutput,
    TorchBackend,
)
from tests.fake_backends import image_with_squares  # noqa: E402
from tests.test_side_probe import _probe_for  # noqa: E402
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, save_checkpoint  # noqa: E402
from utils.confidence import Calibration, PlattMap  # noqa: E402
from utils.predictor import Predictor  # noqa: E402
from utils.side_probe import FEATURE_LAYERS  # noqa: E402
from utils.tta import TestTimeViews  # noqa: E402


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return prepare_for_inference(build_model("small"))


@pytest.fixture(scope="module")
def exported(small_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    calibration = Calibration(joint=PlattMap("heatmap_peak", 3.0, -1.0),
                              hand_present=PlattMap("flow_loglik", 0.001, 5.0))
    report = export_onnx(small_model, path, data_config={"crop_factor": 1.5},
                         calibration=calibration.to_dict(), source="test")  # fmt: skip
    assert report.flow_exported and report.note is None
    return path


def test_onnxruntime_outputs_are_within_1e4_of_pytorch(small_model, exported: Path) -> None:
    onnx_backend, torch_backend = OnnxBackend(exported), TorchBackend(small_model)
    assert onnx_backend.output_names == ["heatmaps", "mask_logits", "log_likelihood",
                                         "loglik_map"]  # fmt: skip
    rng = np.random.default_rng(5)
    for batch in (1, 2, 5):  # the batch axis is dynamic
        images = rng.uniform(0, 1, size=(batch, 3, 128, 128)).astype(np.float32)
        ours, ref = onnx_backend(images), torch_backend(images)
        assert ours.heatmaps.shape == (batch, 21, 32, 32)
        np.testing.assert_allclose(ours.heatmaps, ref.heatmaps, atol=ABS_TOLERANCE, rtol=0)
        np.testing.assert_allclose(ours.mask_logits, ref.mask_logits, atol=ABS_TOLERANCE, rtol=0)
        # A sum over 64 x 8 x 8 float32 terms: relative tolerance (see export_onnx).
        np.testing.assert_allclose(ours.log_likelihood, ref.log_likelihood, rtol=REL_TOLERANCE)
        np.testing.assert_allclose(ours.loglik_map, ref.loglik_map, rtol=REL_TOLERANCE,
                                   atol=ABS_TOLERANCE)  # fmt: skip


def test_the_predictor_gives_the_same_hands_with_both_backends(small_model,
                                                               exported: Path) -> None:
    calibration = Calibration(joint=PlattMap("heatmap_peak", 3.0, -1.0),
                              hand_present=PlattMap("flow_loglik", 0.001, 5.0))
    torch_pred = Predictor.from_model(small_model, {"crop_factor": 1.5}, calibration)
    onnx_pred = Predictor.from_onnx(exported)
    # Crop framing and calibration travel in the file's metadata.
    assert onnx_pred.crop_factor == 1.5 and onnx_pred.calibration == calibration
    assert onnx_pred.side_score == "flow_loglik" == torch_pred.side_score
    image = image_with_squares([(40, 50, 60, 60), (200, 100, 70, 80)])
    boxes = [(40, 50, 60, 60), (200, 100, 70, 80), (0, 0, 320, 240)]
    for a, b in zip(torch_pred.predict(image, boxes, None), onnx_pred.predict(image, boxes, None),
                    strict=True):  # fmt: skip
        assert a.side == b.side
        np.testing.assert_allclose(a.kp2d_px, b.kp2d_px, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=ABS_TOLERANCE)
        assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=REL_TOLERANCE)
        assert a.hand_present == pytest.approx(b.hand_present, abs=1e-4)


def test_test_time_views_run_on_both_backends_alike(small_model, exported: Path) -> None:
    views = TestTimeViews()
    torch_pred = Predictor.from_model(small_model, {"crop_factor": 1.5}, views=views)
    onnx_pred = Predictor.from_onnx(exported, views=views)
    image = image_with_squares([(40, 50, 60, 60)])
    (a,), (b,) = (p.predict(image, [(40, 50, 60, 60)], "right") for p in (torch_pred, onnx_pred))
    np.testing.assert_allclose(a.kp2d_px, b.kp2d_px, atol=1e-2)
    # The evaluator's path: the views warped from prepared crops (numpy for onnxruntime).
    crop = onnx_pred.crop(image, a.affine)[None]
    np.testing.assert_allclose(onnx_pred.run_crops(crop, a.affine[None]).kp2d_px,
                               torch_pred.run_crops(crop, a.affine[None]).kp2d_px, atol=1e-2)


def test_run_py_exports_and_runs_the_onnx_model(tmp_path: Path, capsys) -> None:
    torch.manual_seed(1)
    cfg = ModelConfig.preset("small")
    save_checkpoint({"model": build_model(cfg).state_dict(),
                     "config": {"model": cfg.to_dict(), "train": {}, "data": {"crop_factor": 2.0}},
                     "epoch": 0, "metrics": {}, "version": CHECKPOINT_VERSION},
                    tmp_path / "ckp" / BEST_NAME)  # fmt: skip
    path = tmp_path / "exported" / "model.onnx"
    assert run.main(["--checkpoint", str(tmp_path / "ckp"), "--export_onnx", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {path}" in printed and "log_likelihood     onnxruntime vs torch" in printed
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), image_with_squares([(60, 60, 80, 80)]))
    common = ["--image", str(image), "--bbox", "60", "60", "80", "80"]
    assert run.main(["--checkpoint", str(tmp_path / "ckp"), *common, "--out",
                     str(tmp_path / "t")]) == 0  # fmt: skip
    assert run.main(["--onnx", str(path), *common, "--out", str(tmp_path / "o")]) == 0
    assert "onnx backend" in capsys.readouterr().out
    by_torch = json.loads((tmp_path / "t" / "photo.json").read_text())["hands"][0]
    by_onnx = json.loads((tmp_path / "o" / "photo.json").read_text())["hands"][0]
    assert by_torch["side"] == by_onnx["side"]
    np.testing.assert_allclose(by_torch["kp2d_px"], by_onnx["kp2d_px"], atol=1e-2)


def test_a_model_without_flow_exports_heatmaps_and_masks(tmp_path: Path) -> None:
    model = prepare_for_inference(build_model(ModelConfig.preset("small", flow_enabled=False)))
    report = export_onnx(model, tmp_path / "seednet.onnx")
    assert report.outputs == ("heatmaps", "mask_logits") and not report.flow_exported
    predictor = Predictor.from_onnx(tmp_path / "seednet.onnx")
    assert not predictor.backend.has_flow and predictor.side_score == "heatmap_peak_mean"
    (pred,) = predictor.predict(image_with_squares([]), [(10, 10, 50, 50)], None)
    assert pred.log_likelihood is None and pred.side_confidence is None


def test_the_residual_head_exports_and_gives_the_same_error_scales(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", residual_flow=True))
    with torch.no_grad():
        model.residual.scale_mlp[-1].weight.normal_(std=0.5)  # scales that vary with the crop
    model = prepare_for_inference(model)
    report = export_onnx(model, tmp_path / "residual.onnx")
    assert report.outputs[-1] == "residual_log_sigma" and report.residual_exported
    assert report.max_abs_diff["residual_log_sigma"] < ABS_TOLERANCE
    image = image_with_squares([(40, 50, 60, 60)])
    by_torch = Predictor.from_model(model).predict(image, [(40, 50, 60, 60)], "right")[0]
    by_onnx = Predictor.from_onnx(tmp_path / "residual.onnx").predict(image, [(40, 50, 60, 60)],
                                                                    "right")[0]  # fmt: skip
    assert np.ptp(by_torch.error_scale_px) > 0.1
    np.testing.assert_allclose(by_onnx.error_scale_px, by_torch.error_scale_px, rtol=1e-3)
    without = export_onnx(model, tmp_path / "plain.onnx", with_residual=False, check_batches=())
    assert "residual_log_sigma" not in without.outputs
    assert without.note == "residual flow head left out on request"
    assert Predictor.from_onnx(tmp_path / "plain.onnx").predict(
        image, [(40, 50, 60, 60)], "right")[0].error_scale_px is None


@pytest.mark.parametrize("failing", ["flow", "residual"])
def test_a_head_that_does_not_trace_is_left_out_and_the_note_says_which(
        failing: str, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    real_trace = export_module._trace

    def trace(wrapper, example, path, opset):
        if getattr(wrapper, f"with_{failing}"):
            raise torch.onnx.errors.OnnxExporterError(f"unsupported op in the {failing} head")
        return real_trace(wrapper, example, path, opset)

    monkeypatch.setattr(export_module, "_trace", trace)
    model = prepare_for_inference(build_model(ModelConfig.preset("small", residual_flow=True)))
    report = export_onnx(model, tmp_path / "m.onnx", check_batches=(1,))
    # Only the failing head is left out, and only it is named.
    assert report.flow_exported == (failing != "flow")
    assert report.residual_exported == (failing != "residual")
    assert report.outputs == (("heatmaps", "mask_logits", "log_likelihood", "loglik_map")
                              if failing == "residual"
                              else ("heatmaps", "mask_logits", "residual_log_sigma"))
    expected = {"flow": "the flow head did not export", "residual":
                "the residual flow head did not export"}[failing]  # fmt: skip
    assert report.note.startswith(expected) and report.note.count("did not export") == 1
    assert f"unsupported op in the {failing} head" in report.note
    assert "no log-likelihood" in report.note or failing == "residual"
    assert f"note: {expected}" in report.summary()
    assert OnnxBackend(tmp_path / "m.onnx").has_flow == (failing != "flow")


def test_bad_onnx_files_name_the_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(BackendError, match="onnxruntime cannot load it"):
        Predictor.from_onnx(bad)
    with pytest.raises(BackendError, match="ONNX model not found"):
        Predictor.from_onnx(tmp_path / "missing.onnx")
    assert run.main(["--onnx", str(bad), "--image", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_the_side_probe_travels_in_the_file_and_decides_as_in_torch(
        small_model, tmp_path: Path) -> None:  # fmt: skip
    probe = _probe_for(small_model.cfg, seed=3)
    path = tmp_path / "probe.onnx"
    report = export_onnx(small_model, path, side_probe=probe)
    assert report.outputs[-1] == "probe_features" and report.within_tolerance()
    # Neither the export nor its check leaves a feature hook on the model.
    hooked = small_model.get_submodule(FEATURE_LAYERS[probe.layer].module)
    assert not hooked._forward_hooks
    onnx_backend = OnnxBackend(path)
    assert (onnx_backend.probe_layer, onnx_backend.probe_grid) == (probe.layer, probe.grid)
    images = np.random.default_rng(6).uniform(0, 1, size=(3, 3, 128, 128)).astype(np.float32)
    torch_backend = TorchBackend(small_model, probe.layer, probe.grid)
    np.testing.assert_allclose(onnx_backend(images).probe_features,
                               torch_backend(images).probe_features, atol=ABS_TOLERANCE, rtol=0)
    torch_backend.close()
    onnx_pred = Predictor.from_onnx(path)
    torch_pred = Predictor.from_model(small_model, {"crop_factor": 2.0}, side_probe=probe)
    assert onnx_pred.side_score == "side_probe" == torch_pred.side_score
    np.testing.assert_allclose(onnx_pred.side_probe.weight, probe.weight)
    image = image_with_squares([(40, 50, 60, 60), (200, 100, 70, 80)])
    boxes = [(40, 50, 60, 60), (200, 100, 70, 80), (0, 0, 320, 240)]
    for a, b in zip(torch_pred.predict(image, boxes, None), onnx_pred.predict(image, boxes, None),
                    strict=True):  # fmt: skip
        assert a.side == b.side and a.side_score_name == b.side_score_name == "side_probe"
        assert a.side_probe == pytest.approx(b.side_probe, abs=1e-3)
        assert a.side_confidence == pytest.approx(b.side_confidence, abs=1e-4)


def test_probe_features_without_their_metadata_name_the_file(small_model,
                                                             tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "probe.onnx"
    export_onnx(small_model, path, side_probe=_probe_for(small_model.cfg, seed=3),
                check_batches=())
    proto = onnx.load(str(path))
    kept = [e for e in proto.metadata_props if e.key != ONNX_META_SIDE_PROBE]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(path))
    with pytest.raises(BackendError, match=f"{path}.*probe_features.*{ONNX_META_SIDE_PROBE}"):
        OnnxBackend(path)


def test_the_presence_probe_travels_in_the_file_alone_or_with_the_side_probe(
        small_model, tmp_path: Path) -> None:  # fmt: skip
    from tests.test_presence_probe import _presence_for

    presence = _presence_for(small_model.cfg, bias=0.3)
    side = _probe_for(small_model.cfg, seed=3)
    image = image_with_squares([(40, 50, 60, 60)])
    torch_pred = Predictor.from_model(small_model, {"crop_factor": 2.0}, side_probe=side,
                                      presence_probe=presence)  # fmt: skip
    (expected,) = torch_pred.predict(image, [(40, 50, 60, 60)], "right")
    for name, kwargs in (("alone", {}), ("both", {"side_probe": side})):
        path = tmp_path / f"{name}.onnx"
        report = export_onnx(small_model, path, presence_probe=presence, **kwargs)
        assert report.outputs[-1] == "probe_features" and report.within_tolerance()
        onnx_pred = Predictor.from_onnx(path)
        assert onnx_pred.hand_score == "presence_probe"
        assert (onnx_pred.side_probe is None) == (name == "alone")
        np.testing.assert_allclose(onnx_pred.presence_probe.weight, presence.weight)
        (got,) = onnx_pred.predict(image, [(40, 50, 60, 60)], "right")
        assert got.presence_probe == pytest.approx(expected.presence_probe, abs=1e-4)
    other = _probe_for(small_model.cfg, seed=3, grid=1)
    with pytest.raises(OnnxExportError, match="one set of features"):
        export_onnx(small_model, tmp_path / "mixed.onnx", side_probe=other,
                    presence_probe=presence, check_batches=())  # fmt: skip


def test_a_file_without_the_probe_offers_no_side_probe(exported: Path) -> None:
    backend = OnnxBackend(exported)
    assert "probe_features" not in backend.output_names and backend.probe_layer is None
    predictor = Predictor.from_onnx(exported)
    assert predictor.side_probe is None and "side_probe" not in predictor.available_scores


def test_the_log_likelihood_check_is_relative_to_the_outputs_largest_magnitude(
        monkeypatch, tmp_path: Path) -> None:  # fmt: skip
    # The shipped model's case on an AMD EPYC: a map pixel of 1.7 nats, a sum of terms of
    # about 1 that cancel, differed by 1.8e-4 (1e-4 of itself) while the map reaches 60.
    def raw(map_value: float) -> RawOutput:
        return RawOutput(heatmaps=np.zeros((1, 21, 2, 2), np.float32),
                         mask_logits=np.zeros((1, 1, 2, 2), np.float32),
                         log_likelihood=np.array([100.0]),
                         loglik_map=np.array([[[map_value, 60.0]]]))  # fmt: skip

    class FakeOnnx:
        path, probe_layer, probe_grid = tmp_path / "m.onnx", None, None
        output_names = ["heatmaps", "mask_logits", "log_likelihood", "loglik_map"]

        def __init__(self, path: Path) -> None:
            pass

        def __call__(self, images: np.ndarray) -> RawOutput:
            return raw(1.7 + 1.8e-4)

    class FakeTorch:
        def __init__(self, model, layer, grid) -> None:
            pass

        def __call__(self, images: np.ndarray) -> RawOutput:
            return raw(1.7)

        def close(self) -> None:
            pass

    monkeypatch.setattr(export_module, "OnnxBackend", FakeOnnx)
    monkeypatch.setattr(export_module, "TorchBackend", FakeTorch)
    model = build_model("small")
    abs_diff, rel_diff = export_module.compare_backends(model, tmp_path / "m.onnx", (1,))
    assert abs_diff["loglik_map"] == pytest.approx(1.8e-4, rel=1e-3)
    assert rel_diff["loglik_map"] == pytest.approx(1.8e-4 / 60.0, rel=1e-3)
    report = export_module.ExportReport(path=tmp_path / "m.onnx", outputs=(),
                                        flow_exported=True, max_abs_diff=abs_diff,
                                        max_rel_diff=rel_diff)  # fmt: skip
    assert report.within_tolerance()
    report.max_rel_diff["loglik_map"] = 2 * REL_TOLERANCE
    assert not report.within_tolerance()
