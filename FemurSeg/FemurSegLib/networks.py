"""U-Nets of the reference method (Deniz et al., Sci Rep 2018), in PyTorch.

``UNet3D``: padded 3x3x3 convolutions, ReLU, max-pooling (2x2x2, or per-axis factors for
anisotropic data such as 5 mm coronal slices), transposed-convolution up-sampling, skip
concatenation, a 1x1x1 convolution to class logits. ``UNet2D``: the original unpadded ("valid")
U-Net taking 3 adjacent slices as channels and predicting the centre slice.

``levels`` counts resolution levels including the bottom one, so ``levels=4`` means three
poolings (as in the 3D U-Net of Cicek et al. that the paper builds on). The number of feature maps
doubles at each level, starting at ``features``.

``forward`` returns logits (training uses them with a weighted cross-entropy); the softmax head is
:func:`probabilities` and is part of every exported ONNX graph (see :class:`SoftmaxHead`).

This module imports torch; the inference path with ONNX Runtime never imports it.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

Triple = Tuple[int, int, int]


_NORMS = {2: {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d},
          3: {"batch": nn.BatchNorm3d, "instance": nn.InstanceNorm3d}}


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    """The normalisation layer after a convolution: "none", "batch" or "instance"."""
    if kind == "none":
        return nn.Identity()
    if kind not in _NORMS[dims]:
        raise ValueError(f"unknown normalisation {kind!r} (none, batch, instance)")
    if kind == "instance":
        return _NORMS[dims][kind](channels, affine=True)
    return _NORMS[dims][kind](channels)


def init_weights(module: nn.Module, bias: float = 0.1) -> None:
    """Xavier (Glorot) uniform weights and constant bias, as in the paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)


class _DoubleConv3d(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str, kernel: Triple = (3, 3, 3)):
        pad = tuple(k // 2 for k in kernel)
        super().__init__(
            nn.Conv3d(cin, cout, kernel, padding=pad), _norm(norm, cout, 3), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, kernel, padding=pad), _norm(norm, cout, 3), nn.ReLU(inplace=True))


def default_pooling(levels: int, anisotropic: bool = False) -> List[Triple]:
    """Pooling factors per level transition: 2x2x2, or in-plane only first for thick slices.

    With ``anisotropic`` (for ~0.9 x 0.9 x 5 mm data, array axes [slice, row, column]) the first
    two poolings are (1, 2, 2) so that voxels become closer to isotropic before pooling across
    slices.
    """
    pools = []
    for level in range(levels - 1):
        pools.append((1, 2, 2) if anisotropic and level < 2 else (2, 2, 2))
    return pools


class UNet3D(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, features: int = 32,
                 levels: int = 4, pooling: Optional[Sequence[Sequence[int]]] = None,
                 norm: str = "none", bias_init: float = 0.1):
        super().__init__()
        if levels < 2:
            raise ValueError("levels must be at least 2")
        self.pooling: List[Triple] = [tuple(int(v) for v in p) for p in
                                      (pooling if pooling is not None else default_pooling(levels))]
        if len(self.pooling) != levels - 1:
            raise ValueError(f"pooling needs {levels - 1} entries for {levels} levels, "
                             f"got {len(self.pooling)}")
        widths = [features * 2 ** i for i in range(levels)]
        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            self.down.append(_DoubleConv3d(cin, w, norm))
            if i < levels - 1:
                self.pools.append(nn.MaxPool3d(self.pooling[i], self.pooling[i]))
            cin = w
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in reversed(range(levels - 1)):
            self.ups.append(nn.ConvTranspose3d(widths[i + 1], widths[i], self.pooling[i],
                                               self.pooling[i]))
            self.up_convs.append(_DoubleConv3d(2 * widths[i], widths[i], norm))
        self.head = nn.Conv3d(widths[0], num_classes, 1)
        init_weights(self, bias_init)

    @property
    def divisor(self) -> Triple:
        """Input sizes must be multiples of this per axis."""
        d = [1, 1, 1]
        for p in self.pooling:
            d = [a * b for a, b in zip(d, p)]
        return tuple(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pools):
                skips.append(x)
                x = self.pools[i](x)
        for up, conv in zip(self.ups, self.up_convs):
            x = up(x)
            x = conv(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)


class _DoubleConv2dValid(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(
            nn.Conv2d(cin, cout, 3), _norm(norm, cout, 2), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3), _norm(norm, cout, 2), nn.ReLU(inplace=True))


def _center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


class _UNet2DLayers(nn.Module):
    """The layers of a 2D U-Net shared by :class:`UNet2D` and :class:`UNet25D`: one double
    convolution (``block``) per level, 2x2 max-pooling, 2x2 up-convolutions, skip connections
    (centre-cropped when the convolutions are unpadded) and a 1x1 convolution to class logits."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], block,
                 norm: str, bias_init: float, deep_supervision: int = 0):
        super().__init__()
        if not 0 <= int(deep_supervision) <= len(widths) - 2:
            raise ValueError(f"deep_supervision must be 0..{len(widths) - 2} (levels - 2), "
                             f"not {deep_supervision}")
        self.levels = len(widths)
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(block(cin, w, norm))
            cin = w
        self.pool = nn.MaxPool2d(2, 2)
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in reversed(range(self.levels - 1)):
            self.ups.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, 2))
            self.up_convs.append(block(2 * widths[i], widths[i], norm))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        # deep supervision: class logits also from the next coarser decoder levels (1/2, 1/4 ..)
        self.aux_heads = nn.ModuleList(nn.Conv2d(widths[i], num_classes, 1)
                                       for i in range(1, int(deep_supervision) + 1))
        init_weights(self, bias_init)

    def forward(self, x: torch.Tensor):
        """Class logits; in training mode with deep supervision a tuple: the logits, then those
        of the coarser decoder levels (half, quarter .. the in-plane size), finest first."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.levels - 1:
                skips.append(x)
                x = self.pool(x)
        aux = []
        n_aux = len(self.aux_heads) if self.training else 0
        for n, (up, conv) in enumerate(zip(self.ups, self.up_convs)):
            x = up(x)
            x = conv(torch.cat([_center_crop(skips.pop(), x.shape[-2:]), x], dim=1))
            level = self.levels - 2 - n          # the resolution level of this decoder output
            if 1 <= level <= n_aux:
                aux.append(self.aux_heads[level - 1](x))
        if n_aux:
            return (self.head(x), *reversed(aux))
        return self.head(x)


class UNet2D(_UNet2DLayers):
    """The original U-Net (Ronneberger et al. 2015) with unpadded convolutions.

    Input: ``[N, context, H, W]`` (3 adjacent slices as channels); output: logits of the centre
    slice, ``[N, classes, H - m, W - m]`` where :meth:`output_size` gives the exact size.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, features: int = 64,
                 levels: int = 4, norm: str = "none", bias_init: float = 0.1):
        if levels < 2:
            raise ValueError("levels must be at least 2")
        super().__init__(in_channels, num_classes, [features * 2 ** i for i in range(levels)],
                         _DoubleConv2dValid, norm, bias_init)

    def output_size(self, input_size: int) -> int:
        """Output edge length for an input edge length; raises if the size does not tile evenly."""
        s = input_size
        for _ in range(self.levels - 1):
            s -= 4
            if s <= 0 or s % 2:
                raise ValueError(f"input size {input_size} is not valid for a {self.levels}-level "
                                 "unpadded U-Net (use valid_input_size)")
            s //= 2
        s -= 4
        for _ in range(self.levels - 1):
            s = s * 2 - 4
        if s <= 0:
            raise ValueError(f"input size {input_size} is too small")
        return s

    def valid_input_size(self, min_output: int) -> int:
        """Smallest valid input edge length whose output is at least ``min_output``."""
        s = 4 * 2 ** self.levels
        while True:
            try:
                if self.output_size(s) >= min_output:
                    return s
            except ValueError:
                pass
            s += 1


class _DoubleConv2d(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), _norm(norm, cout, 2), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), _norm(norm, cout, 2), nn.ReLU(inplace=True))


class UNet25D(_UNet2DLayers):
    """A 2.5D U-Net: ``in_channels`` adjacent slices in, the centre slice's class logits out.

    Padded 3x3 convolutions, 2x2 max-pooling and 2x2 up-convolutions (the 3D U-Net's building
    blocks in 2D), so the output has the input's in-plane size; sizes must be multiples of
    :attr:`divisor`. On thick-slice data (5 mm coronal slices) it sees the neighbouring slices as
    channels, and it trains far more updates per CPU hour than a 3D network.
    Input ``[N, in_channels, H, W]``; output ``[N, num_classes, H, W]``. ``deep_supervision``
    adds that many auxiliary heads on the coarser decoder levels; they only answer in training
    mode (see :func:`FemurSegTraining.losses.deep_supervised`), so inference and the exported
    graphs see the plain output.
    """

    def __init__(self, in_channels: int = 5, num_classes: int = 2, features: int = 16,
                 levels: int = 5, norm: str = "batch", bias_init: float = 0.1,
                 max_features: Optional[int] = None, deep_supervision: int = 0):
        if levels < 2:
            raise ValueError("levels must be at least 2")
        if in_channels < 1 or in_channels % 2 == 0:
            raise ValueError(f"in_channels (adjacent slices) must be odd, not {in_channels}")
        widths = [features * 2 ** i for i in range(levels)]
        if max_features:
            widths = [min(w, int(max_features)) for w in widths]
        super().__init__(in_channels, num_classes, widths, _DoubleConv2d, norm, bias_init,
                         deep_supervision)

    @property
    def divisor(self) -> Triple:
        """Input sizes must be multiples of this per axis ([slice, row, column])."""
        d = 2 ** (self.levels - 1)
        return (1, d, d)


class SoftmaxHead(nn.Module):
    """Wraps a network so that it outputs class probabilities (what ONNX graphs carry)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def build_network(architecture: dict) -> nn.Module:
    """Build a network from the ``architecture`` section of a model card or training config."""
    arch = dict(architecture)
    kind = arch.pop("type", None)
    allowed = {"in_channels", "num_classes", "features", "levels", "norm", "bias_init"}
    if kind == "UNet3D":
        allowed = allowed | {"pooling"}
        cls = UNet3D
    elif kind == "UNet2D":
        cls = UNet2D
    elif kind == "UNet25D":
        allowed = allowed | {"max_features", "deep_supervision"}
        cls = UNet25D
    else:
        raise ValueError(f"unknown architecture type {kind!r} (UNet3D, UNet2D or UNet25D)")
    unknown = set(arch) - allowed
    if unknown:
        raise ValueError(f"unknown {kind} parameters: {', '.join(sorted(unknown))}")
    return cls(**arch)


def probabilities(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(net(x), dim=1)
