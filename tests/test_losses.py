"""HandFlowCriterion: BiHand-scaled terms, ignored joints and mask-less samples, loud failures."""

from __future__ import annotations

import pytest
import torch

from models import FlowOutput, HandFlowCriterion, HandFlowOutput, losses

B, K, H = 3, 21, 8


def _output(nstacks: int = 2, with_flow: bool = True) -> HandFlowOutput:
    base = {
        "heatmaps": [torch.rand(B, K, H, H, requires_grad=True) for _ in range(nstacks)],
        "masks": [torch.randn(B, 1, H, H, requires_grad=True) for _ in range(nstacks)],
        "features": torch.randn(B, 4, H, H),
    }
    flow = None
    if with_flow:
        nll = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        zeros = torch.zeros(B)
        flow = FlowOutput(
            z=torch.zeros(B, 4, 2, 2),
            log_det=zeros,
            nll_bpd=nll,
            loglik_map=torch.zeros(B, 2, 2),
            log_likelihood=zeros,
        )
    return HandFlowOutput(**base, flow=flow)


def _batch() -> dict[str, torch.Tensor]:
    return {
        "heatmaps": torch.rand(B, K, H, H),
        "heatmap_weights": torch.ones(B, K),
        "mask": (torch.rand(B, 1, H, H) > 0.5).float(),
        "has_mask": torch.tensor([True, True, True]),
    }


def test_terms_match_hand_computation_and_weights() -> None:
    out, batch = _output(), _batch()
    terms = HandFlowCriterion({"flow": 0.5})(out, batch)
    expected_hm = sum(
        0.5 * (pred - batch["heatmaps"]).pow(2).mean(dim=(0, 2, 3)).sum()
        for pred in out.heatmaps
    )
    expected_mask = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(pred, batch["mask"])
        for pred in out.masks
    )
    torch.testing.assert_close(terms["heatmap"], expected_hm)
    torch.testing.assert_close(terms["mask"], expected_mask)
    torch.testing.assert_close(terms["flow"], torch.tensor(2.0))
    torch.testing.assert_close(terms.total, 100 * expected_hm + expected_mask + 0.5 * 2.0)
    assert terms.weights == {"heatmap": 100.0, "mask": 1.0, "flow": 0.5}
    assert set(terms.to_dict()) == {"heatmap", "mask", "flow", "total"}


def test_zero_weight_joints_are_ignored() -> None:
    out, batch = _output(), _batch()
    batch["heatmap_weights"][:, 5] = 0.0
    batch["heatmap_weights"][1, :] = 0.0
    criterion = HandFlowCriterion()
    before = criterion(out, batch)["heatmap"]
    changed = dict(batch, heatmaps=batch["heatmaps"].clone())
    changed["heatmaps"][:, 5] = 100.0
    changed["heatmaps"][1] = -100.0
    torch.testing.assert_close(criterion(out, changed)["heatmap"], before)
    criterion(out, changed)["heatmap"].backward()
    assert out.heatmaps[0].grad[:, 5].abs().sum() == 0
    assert out.heatmaps[0].grad[1].abs().sum() == 0


def test_samples_without_mask_are_ignored() -> None:
    out, batch = _output(), _batch()
    batch["has_mask"] = torch.tensor([True, False, True])
    criterion = HandFlowCriterion()
    before = criterion(out, batch)["mask"]
    batch["mask"][1] = float("nan")  # whatever a mask-less sample carries must not matter
    after = criterion(out, batch)["mask"]
    torch.testing.assert_close(after, before)
    expected = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(pred[[0, 2]], batch["mask"][[0, 2]])
        for pred in out.masks
    )
    torch.testing.assert_close(after, expected)
    after.backward()
    assert out.masks[0].grad[1].abs().sum() == 0


def test_no_mask_in_batch_gives_zero_mask_loss() -> None:
    out, batch = _output(), _batch()
    batch["has_mask"] = torch.zeros(B, dtype=torch.bool)
    terms = HandFlowCriterion()(out, batch)
    assert float(terms["mask"].detach()) == 0.0
    terms.total.backward()


def test_model_without_flow_has_zero_flow_term() -> None:
    terms = HandFlowCriterion()(_output(with_flow=False), _batch())
    assert float(terms["flow"]) == 0.0


@pytest.mark.parametrize("term", ["heatmap", "mask", "flow"])
def test_non_finite_term_raises_naming_it(term: str) -> None:
    out, batch = _output(), _batch()
    if term == "heatmap":
        out.heatmaps[1].data[0, 0, 0, 0] = float("inf")
    elif term == "mask":
        out.masks[0].data[2, 0, 1, 1] = float("nan")
    else:
        out.flow.nll_bpd.data[1] = float("nan")
    with pytest.raises(FloatingPointError, match=f"non-finite {term} loss"):
        HandFlowCriterion()(out, batch)


def test_unknown_weight_name_and_missing_key_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown loss term"):
        HandFlowCriterion({"heatmaps": 1.0})
    batch = _batch()
    del batch["has_mask"]
    with pytest.raises(KeyError, match="has_mask"):
        HandFlowCriterion()(_output(), batch)


def test_shape_mismatch_is_a_clear_error() -> None:
    batch = _batch()
    batch["heatmaps"] = torch.rand(B, K, H * 2, H * 2)
    with pytest.raises(ValueError, match="differ in shape"):
        HandFlowCriterion()(_output(), batch)


def test_a_new_term_is_one_function_and_one_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    def l1_heatmap(output, batch):
        return (output.heatmaps[-1] - batch["heatmaps"]).abs().mean()

    monkeypatch.setitem(losses.LOSS_TERMS, "l1_heatmap", l1_heatmap)
    out, batch = _output(), _batch()
    terms = HandFlowCriterion({"l1_heatmap": 2.0})(out, batch)
    assert list(terms.to_dict()) == ["heatmap", "mask", "flow", "l1_heatmap", "total"]
    base = 100 * terms["heatmap"] + terms["mask"] + 0.1 * terms["flow"]
    torch.testing.assert_close(terms.total, base + 2.0 * l1_heatmap(out, batch))
