"""`python run.py`: evaluation outputs, --vis, the own-image demo and its error messages."""

import json

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Subset

import datasets
import run
from models import ModelConfig, build_model
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, save_checkpoint
from utils.eval_cli import build_parser
from utils.eval_vis import dataset_record
from utils.predictor import crop_affine

REAL_IMAGE = "HandGraphCNN_RealWorld/real_world_testset/images/00000.jpg"


def _save(path, cfg: ModelConfig, state_dict=None):
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(
        {"model": state_dict if state_dict is not None else model.state_dict(),
         "config": {"model": cfg.to_dict(), "train": {}}, "epoch": 0, "metrics": {},
         "version": CHECKPOINT_VERSION},
        path,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckp")
    _save(folder / BEST_NAME, ModelConfig.preset("small"))
    return folder


@pytest.mark.slow
def test_eval_synth_writes_outputs_and_vis(ckpt_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = run.main([
        "--checkpoint", str(ckpt_dir), "--fine_tune", "synth", "--data_root",
        str(tmp_path / "data"), "--synth_num_test", "5", "-b", "3", "-j", "0", "--vis",
        "--max_vis", "4", "--flip_test", "--out", str(out), "-hgs", "2",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "-hgs 2 disagrees" in captured.err  # the checkpoint's 1 stack wins
    assert "generating 5 frames" in captured.out  # the synthetic set was missing
    assert "Spearman" in captured.out and "flip test" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 5 and metrics["has_flow"]
    assert metrics["metrics"]["auc"] is not None and metrics["metrics_flip_test"] is not None
    preds = json.loads((out / "predictions.json").read_text())
    assert [p["frame_id"] for p in preds] == list(range(5))
    assert np.asarray(preds[0]["kp2d_px"]).shape == (21, 2)
    coco = json.loads((out / "coco_results.json").read_text())
    assert coco[0]["category_id"] == 1 and len(coco[0]["keypoints"]) == 63
    for name in ("pck_curve.png", "predictions_flip.json", "coco_results_flip.json"):
        assert (out / name).is_file(), name
    # --max_vis 4 with batches of 3: a full grid, then a one-row grid, then nothing.
    grids = sorted((out / "vis").glob("*.png"))
    assert [g.name for g in grids] == ["batch_0000.png", "batch_0001.png"]
    assert cv2.imread(str(grids[0])).shape == (3 * 256 + 2 * 2, 6 * 256, 3)
    assert cv2.imread(str(grids[1])).shape == (256, 6 * 256, 3)


def test_demo_on_real_image(ckpt_dir, realdata, tmp_path):
    image = realdata / REAL_IMAGE
    # A random model's scores are low: threshold 0 keeps whatever the localisation finds.
    rc = run.main(["--checkpoint", str(ckpt_dir / BEST_NAME), "--image", str(image),
                   "--out", str(tmp_path), "--device", "cpu", "--min_hand_score", "0"])
    assert rc == 0
    overlay = cv2.imread(str(tmp_path / "00000_overlay.png"))
    assert overlay.shape == cv2.imread(str(image)).shape
    result = json.loads((tmp_path / "00000.json").read_text())
    assert result["localisation"] == "detect" and 1 <= result["num_hands"] <= 2
    hand = result["hands"][0]
    assert len(hand["keypoints"]) == 21 and hand["keypoints"][0]["name"] == "wrist"
    assert isinstance(hand["log_likelihood"], float)
    assert hand["side"] in ("left", "right") and hand["side_source"] == "model"
    assert hand["side_score_name"] == "flow_loglik" and 0.5 <= hand["side_confidence"] <= 1.0
    kp = np.asarray(hand["kp2d_px"])
    assert kp.shape == (21, 2) and np.isfinite(kp).all()


def test_demo_left_hand_mirrors_in_and_out(ckpt_dir, realdata, tmp_path):
    # A left hand in an image = a right hand in the mirrored image, mirrored back.
    image = cv2.imread(str(realdata / REAL_IMAGE))
    width = image.shape[1]
    cv2.imwrite(str(tmp_path / "orig.png"), image)
    cv2.imwrite(str(tmp_path / "mirror.png"), image[:, ::-1])
    box = ["30", "20", "180", "200"]
    mirrored_box = [str(width - 30 - 180), "20", "180", "200"]
    common = ["--checkpoint", str(ckpt_dir), "--out", str(tmp_path / "o")]
    assert run.main([*common, "--image", str(tmp_path / "orig.png"), "--side", "left",
                     "--bbox", *box]) == 0  # fmt: skip
    assert run.main([*common, "--image", str(tmp_path / "mirror.png"), "--side", "right",
                     "--bbox", *mirrored_box]) == 0  # fmt: skip
    left = np.asarray(json.loads((tmp_path / "o/orig.json").read_text())["hands"][0]["kp2d_px"])
    right = np.asarray(
        json.loads((tmp_path / "o/mirror.json").read_text())["hands"][0]["kp2d_px"])
    right[:, 0] = width - 1 - right[:, 0]
    np.testing.assert_allclose(left, right, atol=1e-2)


def test_bihand_seednet_checkpoint_runs_without_flow(realdata, tmp_path):
    # BiHand's release format: {'epoch', 'state_dict'} with DataParallel prefixes, no config.
    cfg = ModelConfig.bihand(nstacks=1, channels=64, input_size=128)
    seednet = build_model(cfg).seednet.state_dict()
    path = tmp_path / BEST_NAME
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in seednet.items()}}, path)
    rc = run.main(["--checkpoint", str(tmp_path), "--image", str(realdata / REAL_IMAGE),
                   "--out", str(tmp_path / "o"), "--whole_image"])  # fmt: skip
    assert rc == 0
    hand = json.loads((tmp_path / "o/00000.json").read_text())["hands"][0]
    assert hand["log_likelihood"] is None and hand["likelihood_note"] == "no flow head"
    # Without a flow the side is decided on the heatmap peaks and has no probability.
    assert hand["side_score_name"] == "heatmap_peak_mean" and hand["side_confidence"] is None


def test_demo_crop_affine_whole_image_is_centre_aligned():
    affine = crop_affine((256, 256), None, "right", 2.0, 128)
    corners = np.array([[-0.5, -0.5, 1.0], [255.5, 255.5, 1.0]]) @ affine.T
    np.testing.assert_allclose(corners[:, :2], [[-0.5, -0.5], [127.5, 127.5]])


def test_undecodable_image_is_named(ckpt_dir, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot decode image" in err and str(bad) in err


def test_missing_dataset_names_what_was_looked_for(ckpt_dir, tmp_path, capsys):
    missing = tmp_path / "no_such_root"
    rc = run.main(["--checkpoint", str(ckpt_dir), "--fine_tune", "rhd", "--data_root",
                   str(missing), "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "RHD_published_v2" in err and "--fine_tune synth" in err
    # An existing root without RHD: the reader's expected layout plus where to download it.
    missing.mkdir()
    rc = run.main(["--checkpoint", str(ckpt_dir), "--fine_tune", "rhd", "--data_root",
                   str(missing), "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "Expected layout" in err and "lmb.informatik.uni-freiburg.de" in err


def test_missing_checkpoint_says_how_to_get_one(tmp_path, capsys):
    assert run.main(["--checkpoint", str(tmp_path), "--image", "x.png"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / BEST_NAME) in err and "train_seednet_fastflow.py" in err


def test_wrong_architecture_checkpoint(tmp_path, capsys):
    # Weights of a 32-channel network under a config that says 64 channels.
    other = build_model(ModelConfig.preset("small", channels=32)).state_dict()
    path = _save(tmp_path / "wrong.pth.tar", ModelConfig.preset("small"), state_dict=other)
    assert run.main(["--checkpoint", str(path), "--image", "x.png"]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and str(path) in err and "size mismatch" in err


def test_corrupted_checkpoint(tmp_path, capsys):
    path = tmp_path / BEST_NAME
    path.write_bytes(b"garbage")
    assert run.main(["--checkpoint", str(tmp_path), "--image", "x.png"]) == 2
    assert str(path) in capsys.readouterr().err


def test_parser_keeps_ancestor_flags():
    command = ("--batch_size 8 --fine_tune rhd --checkpoint checkpoints --data_root data --vis "
               "-j 4 -hgs 2 -hgb 1 -nj 21")  # fmt: skip
    args = build_parser().parse_args(command.split())
    assert (args.batch_size, args.fine_tune, args.workers, args.hg_stacks) == (8, "rhd", 4, 2)
    assert args.vis and args.split == "test" and not args.flip_test


def test_dataset_record_through_subset_and_concat(realdata):
    ds = datasets.build_dataset("rhd", realdata, "test", train_aug=False, frame_ids=range(4),
                                cache_dir=False)  # fmt: skip
    mixed = ConcatDataset([Subset(ds, [3, 1]), ds])
    assert dataset_record(mixed, 0).frame_id == 3
    assert dataset_record(mixed, 1).frame_id == 1
    assert dataset_record(mixed, 4).frame_id == 2


def test_njoints_is_the_ancestors_flag_and_must_be_21(capsys):
    assert run.main(["-nj", "20", "--image", "x.png"]) == 2
    assert "--njoints must be 21" in capsys.readouterr().err


def test_tta_flags_are_checked_and_recorded(ckpt_dir, tmp_path, capsys):
    assert run.main(["--checkpoint", str(ckpt_dir), "--tta_scales", "0.9", "--image",
                     "x.png"]) == 2  # fmt: skip
    assert "--tta_scales needs --tta" in capsys.readouterr().err
    assert run.main(["--checkpoint", str(ckpt_dir), "--tta", "--tta_scales", "-1", "--image",
                     "x.png"]) == 2  # fmt: skip
    assert "--tta: view scales must be finite numbers > 0" in capsys.readouterr().err
    out = tmp_path / "eval"
    assert run.main(["--checkpoint", str(ckpt_dir), "--fine_tune", "synth", "--data_root",
                     str(tmp_path / "data"), "--synth_num_test", "2", "-j", "0", "--tta",
                     "--tta_rotations", "15", "--out", str(out)]) == 0  # fmt: skip
    assert "6 test-time views (keypoints their median)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_time_views"] == {"scales": [1.0, 0.85, 1.15],
                                          "rotations_deg": [0.0, 15.0]}


def test_demo_with_tta_keeps_the_scores_and_records_the_views(ckpt_dir, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, size=(160, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.png"), image)
    common = ["--checkpoint", str(ckpt_dir), "--image", str(tmp_path / "photo.png"),
              "--bbox", "40", "30", "90", "80", "--side", "right"]  # fmt: skip
    assert run.main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert run.main([*common, "--out", str(tmp_path / "tta"), "--tta"]) == 0
    plain, tta = (json.loads((tmp_path / d / "photo.json").read_text()) for d in ("plain", "tta"))
    assert plain["test_time_views"] is None
    assert tta["test_time_views"] == {"scales": [1.0, 0.85, 1.15],
                                      "rotations_deg": [0.0, -20.0, 20.0]}
    a, b = plain["hands"][0], tta["hands"][0]
    assert a["scores"] == b["scores"] and a["log_likelihood"] == b["log_likelihood"]
    assert np.isfinite(b["kp2d_px"]).all() and b["kp2d_px"] != a["kp2d_px"]
