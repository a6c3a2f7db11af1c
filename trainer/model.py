"""Compact 1-D CNNs for raw Raman spectra (Soysal et al., "Reevaluating CNNs for spectral analysis: Raman").

The backbone is the paper's: convolutions of 16/k21, 32/k11, 64/k5 channels, LeakyReLU, and max-pooling of
size ``m`` in ``n`` stages (§3, Tables 3–4: larger ``m``/``n`` buy tolerance to Raman-shift offsets at the
cost of resolution). Two heads:

- ``"positions"`` (default, compact): fixed max-pooling to a few coarse positions, then one linear layer. It
  keeps where the peaks are (global pooling throws that away and collapses accuracy on these data) with
  ~80 k parameters in all.
- ``"dense"``: the paper's flatten + dense layers (millions of parameters), kept for reproduction.

Every layer exports to ONNX: the position pooling is a fixed ``MaxPool1d`` with ``ceil_mode`` computed from
the known input length, not adaptive pooling (which the ONNX exporter rejects when sizes do not divide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, cast

import torch
from torch import nn

from ._settings import SettingsMixin
from .errors import TrainerError

__all__ = ["BlurMaxPool1d", "ModelConfig", "RamanCNN", "count_parameters"]


class BlurMaxPool1d(nn.Module):
    """Anti-aliased max-pooling (Zhang 2019, "Making convolutional networks shift-invariant again").

    A dense max over ``pool_size`` points (stride 1), then a fixed binomial low-pass filter of ``blur`` taps
    applied with stride ``pool_size``. Plain strided max-pooling aliases: a peak moving by one grid point can
    jump between pooled cells; the blur spreads it over neighbouring cells, so the pooled features change
    smoothly with a Raman-shift offset.

    Parameters
    ----------
    channels : int
        Input channels (the filter is depthwise).
    pool_size : int
        Pooling size ``m`` (grid points) and stride.
    blur : int
        Binomial filter taps (odd, ≥ 3).

    Input shape (B, channels, L), float32; output shape (B, channels, ceil(L / pool_size)), as
    ``nn.MaxPool1d(pool_size, ceil_mode=True)``.
    """

    def __init__(self, channels: int, pool_size: int, blur: int) -> None:
        super().__init__()
        if blur < 3 or blur % 2 == 0:
            raise TrainerError(f"pool_blur must be an odd number of taps ≥ 3, got {blur}")
        self.pool_size, self.blur = int(pool_size), int(blur)
        taps = torch.tensor([math.comb(blur - 1, i) for i in range(blur)], dtype=torch.float32)
        self.register_buffer("kernel", (taps / taps.sum()).repeat(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pool with stride 1, then blur-pool: shape (B, C, N) in, (B, C, N // pool) out."""
        x = nn.functional.pad(x, (0, self.pool_size - 1), mode="replicate")
        x = nn.functional.max_pool1d(x, self.pool_size, stride=1)
        x = nn.functional.pad(x, (self.blur // 2, self.blur // 2), mode="replicate")
        kernel = cast(torch.Tensor, self.kernel)  # a registered buffer
        return nn.functional.conv1d(x, kernel, stride=self.pool_size, groups=x.shape[1])


@dataclass
class ModelConfig(SettingsMixin):
    """Architecture settings of :class:`RamanCNN`.

    Parameters
    ----------
    channels : list of int
        Output channels of each convolution (paper: 16, 32, 64).
    kernel_sizes : list of int
        Kernel size of each convolution, in grid points (paper: 21, 11, 5).
    pool_size : int
        Max-pooling size ``m`` (paper §3: 2 … 64).
    n_pool : int
        Number of pooling stages ``n``: one after each of the first ``n`` convolutions; stages beyond the
        number of convolutions are appended after the last one (paper Table 4).
    head : {"positions", "dense"}
        Classification head (see module docstring).
    head_positions : int
        Coarse positions kept by the ``"positions"`` head.
    dense_units : list of int
        Hidden layers of the ``"dense"`` head (paper: a large dense layer).
    dropout : float
        Dropout before the classifier.
    batch_norm : bool
        Batch normalisation after each convolution.
    negative_slope : float
        LeakyReLU slope.
    in_channels : int
        Input channels (set by the trainer from the preprocessing: 1, or 2 with the derivative channel).
    pointwise_channels : int
        Channels of a 1×1 convolution between the backbone and the head (0: none); shrinks the head.
    pool_blur : int
        Anti-aliased pooling: binomial filter taps of :class:`BlurMaxPool1d` in every pooling stage (0: plain
        max-pooling, the paper's).
    members : int
        Independent backbones (an ensemble of ``members`` networks, each with its own initialisation). The
        embedding is their concatenation and the classifier one linear layer on it, so the served logits are
        the mean of the members' logits (see :meth:`RamanCNN.member_logits`) and head-only transfer, hot-swap
        and export see an ordinary backbone + linear head.
    """

    _kind: ClassVar[str] = "model"

    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    kernel_sizes: list[int] = field(default_factory=lambda: [21, 11, 5])
    pool_size: int = 2
    n_pool: int = 3
    head: str = "positions"
    head_positions: int = 16
    dense_units: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.0
    batch_norm: bool = False
    negative_slope: float = 0.01
    in_channels: int = 1
    pointwise_channels: int = 0
    members: int = 1
    pool_blur: int = 0

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.kernel_sizes) or not self.channels:
            raise TrainerError("channels and kernel_sizes must be non-empty lists of equal length")
        if self.pool_size < 1 or self.n_pool < 0:
            raise TrainerError(f"pool_size must be ≥ 1 and n_pool ≥ 0, got m={self.pool_size}, n={self.n_pool}")
        if self.head not in ("positions", "dense"):
            raise TrainerError(f"head must be 'positions' or 'dense', got {self.head!r}")
        if self.head_positions < 1:
            raise TrainerError("head_positions must be ≥ 1")
        if self.members < 1:
            raise TrainerError(f"members must be ≥ 1, got {self.members}")
        if self.pool_blur and (self.pool_blur < 3 or self.pool_blur % 2 == 0):
            raise TrainerError(f"pool_blur must be 0 or an odd number of taps ≥ 3, got {self.pool_blur}")




class RamanCNN(nn.Module):
    """The paper's 1-D CNN with a configurable pooling (m, n) and head.

    Parameters
    ----------
    n_points : int
        Length of the input spectrum (grid points, e.g. 1392).
    n_classes : int
        Number of minerals.
    config : ModelConfig
        Architecture settings.

    Input shape (B, in_channels, n_points), or (B, n_points) for one channel, float32; output logits shape
    (B, n_classes).
    """

    def __init__(self, n_points: int, n_classes: int, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config, self.n_points, self.n_classes = cfg, int(n_points), int(n_classes)
        self.features, self.pool, self.embed, self.feature_length, self.feature_channels, d = self._backbone(cfg)
        # Further ensemble members (``members`` > 1): same architecture, own weights; member 0 keeps the
        # attribute names of a single network so single-member state dicts are unchanged.
        self.extra_members = nn.ModuleList()
        for _ in range(cfg.members - 1):
            feats, pool, embed, *_ = self._backbone(cfg)
            self.extra_members.append(nn.Sequential(feats, pool, embed))
        self.member_embedding_size = d
        self.embedding_size = d * cfg.members
        self.classifier = nn.Linear(self.embedding_size, self.n_classes)

    def _backbone(self, cfg: ModelConfig) -> tuple[nn.Sequential, nn.Module, nn.Sequential, int, int, int]:
        """One member: convolutions (features), position pooling, flatten/dense (+ dropout); its sizes."""
        layers: list[nn.Module] = []
        c_in, length = cfg.in_channels, self.n_points
        for i, (c_out, k) in enumerate(zip(cfg.channels, cfg.kernel_sizes, strict=True)):
            layers.append(nn.Conv1d(c_in, c_out, k, padding=k // 2))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(c_out))
            layers.append(nn.LeakyReLU(cfg.negative_slope))
            n_here = 1 if i < len(cfg.channels) - 1 else max(1, cfg.n_pool - i)
            if i < cfg.n_pool:
                for _ in range(n_here):
                    if length > 1 and cfg.pool_size > 1:
                        layers.append(BlurMaxPool1d(c_out, cfg.pool_size, cfg.pool_blur) if cfg.pool_blur
                                      else nn.MaxPool1d(cfg.pool_size, ceil_mode=True))
                        length = math.ceil(length / cfg.pool_size)
            c_in = c_out
        if cfg.pointwise_channels:
            layers.append(nn.Conv1d(c_in, cfg.pointwise_channels, 1))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(cfg.pointwise_channels))
            layers.append(nn.LeakyReLU(cfg.negative_slope))
            c_in = cfg.pointwise_channels
        features, feature_channels = nn.Sequential(*layers), c_in
        if cfg.head == "positions":
            kernel = math.ceil(length / min(cfg.head_positions, length))
            pool: nn.Module = nn.MaxPool1d(kernel, ceil_mode=True) if kernel > 1 else nn.Identity()
            width = c_in * math.ceil(length / kernel)
            head: list[nn.Module] = [nn.Flatten()]
        else:
            pool = nn.Identity()
            width = c_in * length
            head = [nn.Flatten()]
            for units in cfg.dense_units:
                head += [nn.Linear(width, units), nn.LeakyReLU(cfg.negative_slope)]
                width = units
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        return features, pool, nn.Sequential(*head), length, feature_channels, width

    @property
    def member_features(self) -> list[nn.Sequential]:
        """The convolutional feature extractor of every member (for Grad-CAM)."""
        return [self.features] + [cast(nn.Sequential, cast(nn.Sequential, m)[0]) for m in self.extra_members]

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features before the classifier, shape (B, embedding_size): the members' embeddings,
        concatenated.
        """
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if not len(self.extra_members):
            return self._member_embedding(x, 0)
        return torch.cat([self._member_embedding(x, i) for i in range(self.config.members)], dim=1)

    def _member_embedding(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """Embedding of one member, shape (B, member_embedding_size), for input x shape (B, C, N)."""
        if member == 0:
            return self.embed(self.pool(self.features(x)))
        return self.extra_members[member - 1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (B, n_classes), for spectra of shape (B, C, N)."""
        return self.classifier(self.embedding(x))

    def member_logits(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """Logits of one ensemble member alone, shape (B, n_classes), for input x shape (B, C, N).

        Member ``i`` uses its slice ``W_i`` of the classifier: ``M·e_i·W_iᵀ + b``, so the mean over members
        (on the same input) is the served logits ``e·Wᵀ + b``. Training each member on its own loss (and its
        own augmented batch) trains the members as independent networks that share only the bias.
        """
        if x.dim() == 2:
            x = x.unsqueeze(1)
        m, d = self.config.members, self.member_embedding_size
        if m == 1:
            return self.classifier(self.embedding(x))
        e = self._member_embedding(x, member)
        w = self.classifier.weight[:, member * d:(member + 1) * d]
        return m * (e @ w.T) + self.classifier.bias


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
