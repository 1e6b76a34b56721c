"""PReLU as elementwise maxima, for converters whose own PReLU lowering costs (shared by the
TFLite and ExecuTorch converters).

For a slope a <= 1, PReLU(y) = max(y, a·y): y >= 0 gives y >= a·y, y < 0 gives a·y >= y. A slope
above 1 has no such form; with ``any_slope`` those PReLUs become max(y, 0) + a·min(y, 0) (equal for
every a), otherwise they stay PReLUs.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class _ChannelSlopes(nn.Module):
    """A PReLU's per-channel slopes, kept as a buffer, broadcast over a feature map."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.register_buffer("slope", prelu.weight.detach().clone())

    def slopes_for(self, y: torch.Tensor) -> torch.Tensor:
        return self.slope.view(1, -1, *([1] * (y.dim() - 2)))


class MaximumPReLU(_ChannelSlopes):
    """max(y, a·y) per channel: PReLU for slopes a <= 1."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.maximum(y, y * self.slopes_for(y))


class ClampPReLU(_ChannelSlopes):
    """max(y, 0) + a·min(y, 0) per channel: PReLU for any slope."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.clamp(y, min=0) + torch.clamp(y, max=0) * self.slopes_for(y)


def prelu_as_maximum(model: nn.Module, any_slope: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) whose PReLUs with every slope <= 1 are ``MaximumPReLU``s;
    with ``any_slope`` the others are ``ClampPReLU``s, else they stay."""
    rewritten = copy.deepcopy(model).eval()
    for parent in list(rewritten.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.PReLU):
                if bool((child.weight <= 1).all()):
                    setattr(parent, name, MaximumPReLU(child))
                elif any_slope:
                    setattr(parent, name, ClampPReLU(child))
    return rewritten
