"""MobileFaceNet (Chen et al., 2018) with a width multiplier.

112×112 input -> conv 3×3/2 -> depthwise 3×3 -> inverted-residual bottlenecks -> conv 1×1 (512)
-> global depthwise conv 7×7 (GDC) -> linear 1×1 -> BatchNorm -> embedding (128 or 512).
PReLU activations, as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# (expansion, output channels, repeats, first stride)
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


@dataclass(frozen=True)
class StudentArch:
    """What it takes to rebuild a student from a checkpoint."""

    name: str = "mobilefacenet"
    width: float = 1.0
    embedding_size: int = 128


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True,
                 padding: int | None = None):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if padding is None else padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            ConvBlock(cin, hidden, 1, 1),
            ConvBlock(hidden, hidden, 3, stride, groups=hidden),
            ConvBlock(hidden, cout, 1, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    def __init__(self, width: float = 1.0, embedding_size: int = 128):
        super().__init__()
        self.arch = StudentArch(width=width, embedding_size=embedding_size)
        stem = _scaled(64, width)
        layers: list[nn.Module] = [ConvBlock(3, stem, 3, 2), ConvBlock(stem, stem, 3, 1, groups=stem)]
        cin = stem
        for expansion, channels, repeats, stride in BOTTLENECKS:
            cout = _scaled(channels, width)
            for i in range(repeats):
                layers.append(Bottleneck(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        head = _scaled(512, width)
        layers += [
            ConvBlock(cin, head, 1, 1),
            ConvBlock(head, head, 7, 1, groups=head, act=False, padding=0),  # GDC: 7×7 -> 1×1
            nn.Conv2d(head, embedding_size, 1, bias=False),
            nn.BatchNorm2d(embedding_size),
        ]
        self.features = nn.Sequential(*layers)
        self.embedding_size = embedding_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N,3,112,112] normalised input -> [N, embedding_size] raw (un-normalised) embedding."""
        return self.features(x).flatten(1)
