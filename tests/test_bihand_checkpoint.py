"""Loading BiHand SeedNet checkpoints: the reference key/shape list loads and computes BiHand's net.

The reference list (../shared/reference/bihand_seednet_state_dict.txt) gives the exact keys and
shapes of BiHand's state dict. A random state dict with exactly those entries is saved the way
BiHand does ({'epoch', 'state_dict'} with 'module.' prefixes) and loaded through
load_bihand_seednet. The loaded model's output is compared with `_bihand_reference_forward`, a
functional forward written from the state dict keys alone (BiHand's SeedNet.forward,
HourglassBisected and BottleneckBlock, as the key-naming header describes them).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models import BIHAND_MEAN, BIHAND_STD
from models.bihand import load_bihand_seednet, read_bihand_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("HANDFLOW_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))
KEY_LIST = "bihand_seednet_state_dict.txt"


@pytest.fixture(scope="module")
def reference_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of BiHand's SeedNet state dict, parsed from the reference list."""
    path = REFERENCE / KEY_LIST
    if not path.is_file():
        pytest.skip(f"BiHand key list not found at {path} (set HANDFLOW_REFERENCE)")
    shapes = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def _random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random but well-scaled weights with exactly the given names and shapes."""
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # BatchNorm weight
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def _bn(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"],
        sd[f"{name}.weight"], sd[f"{name}.bias"], training=False, eps=1e-5,
    )  # fmt: skip


def _conv(x: torch.Tensor, sd: dict, name: str, **kwargs) -> torch.Tensor:
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), **kwargs)


def _residual(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    """BiHand's nn.Sequential of BottleneckBlocks at `name` (blocks .0, .1, ...)."""
    block = 0
    while f"{name}.{block}.bn1.weight" in sd:
        b = f"{name}.{block}"
        out = _conv(F.relu(_bn(x, sd, f"{b}.bn1")), sd, f"{b}.conv1")
        out = _conv(F.relu(_bn(out, sd, f"{b}.bn2")), sd, f"{b}.conv2", padding=1)
        out = _conv(F.relu(_bn(out, sd, f"{b}.bn3")), sd, f"{b}.conv3")
        skip = _conv(x, sd, f"{b}.conv4") if f"{b}.conv4.weight" in sd else x
        x = out + skip
        block += 1
    return x


def _hourglass(x: torch.Tensor, sd: dict, hg: str, level: int):
    up1 = _residual(x, sd, f"{hg}.{level}.0.0")
    up2 = _residual(x, sd, f"{hg}.{level}.0.1")
    low = _residual(F.max_pool2d(x, 2, stride=2), sd, f"{hg}.{level}.1.0")
    if level > 0:
        low1, low2 = _hourglass(low, sd, hg, level - 1)
    else:
        low1 = _residual(low, sd, f"{hg}.0.3.0")
        low2 = _residual(low, sd, f"{hg}.0.3.1")
    low1 = _residual(low1, sd, f"{hg}.{level}.2.0")
    low2 = _residual(low2, sd, f"{hg}.{level}.2.1")
    return up1 + F.interpolate(low1, scale_factor=2), up2 + F.interpolate(low2, scale_factor=2)


def _fc(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.relu(_bn(_conv(x, sd, f"{name}.0"), sd, f"{name}.1"))


def _bihand_reference_forward(sd: dict, image01: torch.Tensor):
    """BiHand SeedNet.forward on RGB in [0, 1] (BiHand feeds image - 0.5)."""
    x = image01 - 0.5
    x = F.relu(_bn(_conv(x, sd, "conv1", stride=2, padding=3), sd, "bn1"))
    x = _residual(x, sd, "layer1")
    x = F.max_pool2d(x, 2, stride=2)
    x = _residual(_residual(x, sd, "layer2"), sd, "layer3")
    nstacks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("hg2b."))
    depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("hg2b.0.hg."))
    heatmaps, masks = [], []
    for i in range(nstacks):
        y1, y2 = _hourglass(x, sd, f"hg2b.{i}.hg", depth - 1)
        y1 = _fc(_residual(y1, sd, f"res1.{i}"), sd, f"fc1.{i}")
        y2 = _fc(_residual(y2, sd, f"res2.{i}"), sd, f"fc2.{i}")
        hm, mask = _conv(y1, sd, f"hm.{i}"), _conv(y2, sd, f"mask.{i}")
        heatmaps.append(hm)
        masks.append(mask)
        if i < nstacks - 1:
            x = (
                x + _conv(y1, sd, f"_fc1.{i}") + _conv(y2, sd, f"_fc2.{i}")
                + _conv(hm, sd, f"_hm.{i}") + _conv(mask, sd, f"_mask.{i}")
            )  # fmt: skip
        else:
            features = x + y1 + y2
    return heatmaps, masks, features


@pytest.fixture(scope="module")
def bihand_checkpoint(reference_shapes, tmp_path_factory) -> tuple[Path, dict]:
    state = _random_state_dict(reference_shapes)
    path = tmp_path_factory.mktemp("bihand") / "ckp_seednet_all.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return path, state


@pytest.fixture(scope="module")
def loaded_model(bihand_checkpoint):
    return load_bihand_seednet(bihand_checkpoint[0])


def test_reference_key_list_loads_strictly(bihand_checkpoint, reference_shapes, loaded_model):
    path, state = bihand_checkpoint
    read, epoch = read_bihand_state_dict(path)
    assert epoch == 3
    assert set(read) == set(reference_shapes)
    model = loaded_model
    loaded = model.seednet.state_dict()
    assert set(loaded) == set(reference_shapes)  # bijective: nothing missing, nothing extra
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert sum(p.numel() for p in model.parameters()) == 11_222_700
    assert model.flow is None
    assert model.cfg.mean == BIHAND_MEAN
    assert model.cfg.std == BIHAND_STD
    assert (model.cfg.nstacks, model.cfg.nblocks, model.cfg.njoints) == (2, 1, 21)


def test_loaded_model_computes_bihand_seednet(bihand_checkpoint, loaded_model) -> None:
    _, state = bihand_checkpoint
    model = loaded_model.eval()
    # 64x64 keeps the test fast: the hourglass reaches 1x1 at its innermost level.
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(image)
        again = model(image)
        heatmaps, masks, features = _bihand_reference_forward(state, image)
    for got, ref in zip(
        [*out.heatmaps, *out.masks, out.features],
        [*heatmaps, *masks, features],
        strict=True,
    ):
        scale = ref.abs().max()
        assert scale > 1e-3  # outputs are not trivially zero
        torch.testing.assert_close(got, ref, atol=1e-4 * float(scale), rtol=1e-4)
    assert torch.equal(out.heatmaps[-1], again.heatmaps[-1])


def test_bare_state_dict_and_flow_override(bihand_checkpoint) -> None:
    _, state = bihand_checkpoint
    model = load_bihand_seednet(dict(state), flow_enabled=True)
    assert model.flow is not None
    assert torch.equal(model.seednet.conv1.weight, state["conv1.weight"])


def test_full_bihand_network_prefix_is_found(bihand_checkpoint) -> None:
    _, state = bihand_checkpoint
    full = {f"module.upstream.seednet.{k}": v for k, v in state.items()}
    full["module.upstream.liftnet.conv1.weight"] = torch.zeros(1)
    model = load_bihand_seednet({"epoch": 1, "state_dict": full})
    assert torch.equal(model.seednet.hm[1].bias, state["hm.1.bias"])


def test_mismatched_checkpoint_is_a_clear_error(bihand_checkpoint, tmp_path) -> None:
    _, state = bihand_checkpoint
    broken = dict(state)
    del broken["hg2b.1.hg.0.3.1.0.conv2.weight"]
    broken["hm.0.weight"] = torch.zeros(20, 256, 1, 1)
    with pytest.raises(ValueError, match="1 missing keys.*shape mismatches"):
        load_bihand_seednet(broken)
    with pytest.raises(ValueError, match="not a SeedNet state dict"):
        load_bihand_seednet({"conv1.weight": state["conv1.weight"]})
    with pytest.raises(FileNotFoundError, match="BiHand SeedNet checkpoint not found"):
        load_bihand_seednet(tmp_path / "absent.pth.tar")
