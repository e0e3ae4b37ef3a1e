"""Inference-time folding of BatchNorm into the convolution that precedes it.

In eval mode a BatchNorm is a per-channel affine map ``y = s * (x - mu) + beta`` with
``s = gamma / sqrt(var + eps)``; when it directly follows a convolution ``W x + b`` the two
are one convolution with ``W' = s W`` and ``b' = s (b - mu) + beta``. SeedNet's pre-activation
bottleneck (BN, ReLU, conv) x 3 has two such pairs per block (conv1 -> bn2, conv2 -> bn3),
the stem has conv1 -> bn1 and every per-stack ``fc`` is conv -> BN -> ReLU; the first BN of
each bottleneck follows a sum and stays. Folding removes about two thirds of the BatchNorms
with outputs equal to the unfolded model's up to float rounding (tests: < 1e-4).
"""

from __future__ import annotations

import torch
from torch import nn

from models.hourglass import PreActBottleneck


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place; the BN is then the identity."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1).to(conv.weight.dtype))
    new_bias = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))
    else:
        conv.bias.copy_(new_bias)


def fold_batchnorm(backbone: nn.Module) -> int:
    """Fold every conv -> BatchNorm pair of a backbone in place; returns how many.

    The pairs found are those of SeedNet's blocks: inside a pre-activation bottleneck, in an
    `nn.Sequential` (conv then BN) and the stem's `conv1` -> `bn1`; others stay as they are.

    The model must be in eval mode (folding uses the running statistics) and must not be
    trained afterwards: the folded BatchNorms are replaced by `nn.Identity`.
    """
    if backbone.training:
        raise RuntimeError("fold_batchnorm needs a model in eval mode (it uses running "
                           "statistics); call model.eval() first")
    folded = 0
    for module in backbone.modules():
        if isinstance(module, PreActBottleneck):
            for conv_name, bn_name in (("conv1", "bn2"), ("conv2", "bn3")):
                bn = getattr(module, bn_name)
                if isinstance(bn, nn.BatchNorm2d):
                    fold_conv_bn(getattr(module, conv_name), bn)
                    setattr(module, bn_name, nn.Identity())
                    folded += 1
        elif isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    fold_conv_bn(conv, bn)
                    module[i + 1] = nn.Identity()
                    folded += 1
    stem_bn = getattr(backbone, "bn1", None)
    if isinstance(stem_bn, nn.BatchNorm2d) and isinstance(getattr(backbone, "conv1", None),
                                                          nn.Conv2d):
        fold_conv_bn(backbone.conv1, stem_bn)
        backbone.bn1 = nn.Identity()
        folded += 1
    return folded
