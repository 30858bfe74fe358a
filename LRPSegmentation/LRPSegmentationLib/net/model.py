"""The 3D U-Net of the paper (four levels, BatchNorm, LeakyReLU(0.2), concatenation skips).

Deliberate differences from the paper's code (also listed in the README):
- gradients flow through the skips (the paper's code rebuilt them as new leaf tensors);
- any D, H, W works: the input is zero-padded up to a multiple of 2**(levels-1) and the output
  cropped back (the paper hard-coded depth 19 and H, W divisible by 8);
- the head is a plain 1x1x1 conv (logits of either sign) unless ``paper_head`` asks for the
  paper's Conv + BatchNorm + ReLU.

Every operation that relevance propagation must see is its own module instance (no reused
modules, no functional activations), so the LRP engine can attach rules by layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from LRPSegmentationLib.data.modalities import MODALITIES


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet3D`; stored with the weights so a file rebuilds its own model."""

    in_channels: int = len(MODALITIES)
    num_classes: int = 2
    base_width: int = 32
    levels: int = 4
    negative_slope: float = 0.2
    paper_head: bool = False

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 1 or self.base_width < 1:
            raise ValueError(f"UNetConfig needs positive channel counts, got {self}")
        if self.levels < 2:
            raise ValueError(f"UNetConfig needs at least 2 levels, got {self.levels}")

    @property
    def size_multiple(self) -> int:
        """Each spatial size is padded up to a multiple of this before the encoder."""
        return 2 ** (self.levels - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"Unknown U-Net config keys {sorted(unknown)}; known keys are {sorted(known)}.")
        return cls(**values)


class DoubleConv(nn.Sequential):
    """Two (Conv3d 3x3x3 -> BatchNorm3d -> LeakyReLU) stages."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__(
            nn.Conv3d(in_channels, mid_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(mid_channels),
            nn.LeakyReLU(negative_slope),
            nn.Conv3d(mid_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.LeakyReLU(negative_slope),
        )


class Concatenate(nn.Module):
    """Channel concatenation ``cat(skip, up)`` as a module, so relevance can be split and filtered here."""

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return torch.cat((skip, up), dim=1)


class UNet3D(nn.Module):
    """Four-level 3D U-Net mapping (N, 6, D, H, W) images to (N, classes, D, H, W) logits."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        c = self.config
        width = [c.base_width * 2**i for i in range(c.levels + 1)]
        self.encoders = nn.ModuleList(
            DoubleConv(c.in_channels if i == 0 else width[i], width[i], width[i + 1], c.negative_slope)
            for i in range(c.levels)
        )
        self.pools = nn.ModuleList(nn.MaxPool3d(2) for _ in range(c.levels - 1))
        # Decoder level j (deepest first) upsamples the deeper output and joins the skip of level j.
        deeper = [width[j + 2] for j in range(c.levels - 1)]
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(deeper[j], deeper[j], kernel_size=2, stride=2, bias=False) for j in range(c.levels - 1)
        )
        self.concats = nn.ModuleList(Concatenate() for _ in range(c.levels - 1))
        self.decoders = nn.ModuleList(
            DoubleConv(width[j + 1] + deeper[j], width[j + 1], width[j + 1], c.negative_slope)
            for j in range(c.levels - 1)
        )
        head: list[nn.Module] = [nn.Conv3d(width[1], c.num_classes, kernel_size=1)]
        if c.paper_head:
            head += [nn.BatchNorm3d(c.num_classes), nn.ReLU()]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"UNet3D expects input of shape (N, {self.config.in_channels}, D, H, W), got {tuple(x.shape)}."
            )
        size = x.shape[2:]
        m = self.config.size_multiple
        pad = [p for s in reversed(size) for p in (0, -s % m)]
        x = F.pad(x, pad)
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < len(self.pools):
                skips.append(x)
                x = self.pools[level](x)
        for j in reversed(range(len(self.decoders))):
            x = self.decoders[j](self.concats[j](skips[j], self.ups[j](x)))
        x = self.head(x)
        return x[..., : size[0], : size[1], : size[2]]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
