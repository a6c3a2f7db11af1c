"""Novelty detection in the trainer: a compact 1-D convolutional autoencoder, its nominal-only threshold, and
the classifier-only scores it is compared with.

Novelty score
-------------
The score of a spectrum is a **reconstruction error** of the preprocessed spectrum ``x`` (what the
classifier reads, :class:`edge.preprocess.Preprocessor`; channel 0 for multi-channel bundles) against the
autoencoder's reconstruction ``r``. Two metrics are computed (:func:`edge.novelty.novelty_scores`):

- ``line_cosine`` (default, thresholded): ``1 − cos(hp(x), hp(r))``, ``hp`` = minus a 31-point centred
  moving average: the mismatch of the Raman lines, blind to smooth backgrounds; dimensionless, in [0, 2];
- ``mse``: ``mean_i (x_i − r_i)²`` over the N grid points (squared max-normalised intensity).

The default was chosen on the training split only (10 of its 63 classes held out as "novel", held-out
spectra of the others as nominal, 4 random draws, 60 epochs): AUROC 0.72 for ``line_cosine`` against 0.66
for ``mse``; the plain MSE is dominated by each sample's own fluorescence background. A compression through
a 32-number bottleneck reconstructs what the nominal spectra share and loses what they do not: the lines of
a mineral it never saw stay in the residual (FIELD_NOTES, "Novelty and drift"). Lines moved by a Raman-shift
offset raise it too, but weakly: the drift monitor's offset estimate (:mod:`edge.novelty`) is the sharper
signal for that.

Threshold (nominal data only)
-----------------------------
``threshold = quantile(out-of-fold scores, q)``, ``q = 0.95`` by default. The out-of-fold errors come from
K autoencoders (K = 5) each fitted on the training spectra of K−1 folds and scoring the held-out fold;
folds are stratified by class (every class of the 40 % split has ≥ 3 spectra; a class with a single spectrum
is never held out, since it would be novel to its own fold). The autoencoder that ships is then fitted on
all training spectra. No anomalous spectrum is used anywhere. 0.95 rather than 0.99: with ~340 calibration
spectra the 99 % quantile rests on the 3–4 largest errors and is too noisy to be a promise.

Spectral library (the daemon's default ``novel`` decision)
----------------------------------------------------------
:func:`fit_novelty` also keeps the preprocessed training spectra as a :class:`edge.novelty.SpectralLibrary`:
a spectrum's library score is 1 − the cosine similarity of its band profile (:func:`edge.novelty.band_profiles`:
the positive line component with band heights compressed, so that *which* bands a spectrum has counts, not
their orientation-dependent heights) with its best-matching training spectrum of the class the classifier
names, within ±3 cm⁻¹ (the calibration tolerance). Its threshold is the same quantile of the
leave-one-out scores of the training spectra (each matched against the *other* spectra of its class; nominal
data only). On the real leave-10-classes-out evaluation it beats the autoencoder and every classifier-only
score (README, "Novelty").

Classifier-only scores (for the comparison in ``edge-eval novelty``)
--------------------------------------------------------------------
Higher means "more novel" for every score:

- ``msp``: 1 − maximum softmax probability;
- ``energy``: −logsumexp(logits) (the free energy at temperature 1);
- ``prototype``: cosine distance of the backbone embedding (:meth:`RamanCNN.embedding`) to the nearest
  class prototype (the mean of the class's L2-normalised training embeddings).

Their thresholds are recorded with the same quantile but are **in-sample** (the classifier was fitted on the
very spectra they are computed on, so they are optimistic); ``manifest["novelty"]["classifier_scores"]``
says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge.bundle import Bundle
from edge.data import SpectraSet
from edge.errors import BundleError
from edge.novelty import (
    AE_FILE_STEM,
    HIGHPASS_POINTS,
    LIBRARY_FILE,
    LIBRARY_SHIFT_TOLERANCE_CM1,
    METRICS,
    NOVELTY_SCHEMA,
    PROTOTYPES_FILE,
    SpectralLibrary,
    class_mean_spectra,
    primary_channel,
    residual_scores,
)
from edge.preprocess import PreprocessConfig, Preprocessor, resample

from ._settings import SettingsMixin
from .augment import AugmentConfig, augment_batch
from .errors import TrainerError

__all__ = [
    "AE_PT_FILE",
    "AEConfig",
    "NoveltyFit",
    "RamanAutoencoder",
    "ae_scores",
    "class_prototypes",
    "classifier_outputs",
    "classifier_scores",
    "fit_autoencoder",
    "fit_novelty",
    "load_autoencoder",
    "save_novelty",
    "stratified_folds",
]

AE_PT_FILE = f"{AE_FILE_STEM}.pt"
SCORE_NAMES = ("msp", "energy", "prototype")


@dataclass
class AEConfig(SettingsMixin):
    """Autoencoder architecture, training and calibration settings.

    Parameters
    ----------
    patch : int
        Points per position of the first (patch) convolution: kernel = stride = ``patch``.
    channels : list of int
        Output channels of the encoder convolutions; ``channels[0]`` is the patch convolution's (the decoder
        mirrors them).
    kernel_sizes : list of int
        Kernel sizes, grid positions (odd): ``kernel_sizes[i]`` for encoder stage i ≥ 1 and its mirrored
        decoder stage; ``kernel_sizes[0]`` for the decoder's last convolution.
    pools : list of int
        Stride of encoder stage i ≥ 1 (the decoder upsamples by the same factor); ``pools[0]`` must be 1.
    latent : int
        Bottleneck size (numbers per spectrum).
    max_epochs : int
        Training epochs (fixed: no early stopping, no validation split).
    batch_size : int
    lr : float
        Adam learning rate (cosine-annealed to 5 % of it).
    weight_decay : float
    noise_std : float
        Denoising: Gaussian noise (relative to each spectrum's maximum) added to the input, not the target.
    folds : int
        K of the out-of-fold threshold calibration (≥ 2).
    quantile : float
        Quantile of the out-of-fold nominal scores used as the threshold.
    metric : {"line_cosine", "mse"}
        The thresholded novelty score.
    seed : int
    threads : int
        torch CPU threads.
    """

    _kind: ClassVar[str] = "autoencoder"

    patch: int = 4
    channels: list[int] = field(default_factory=lambda: [8, 16])
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 5])
    pools: list[int] = field(default_factory=lambda: [1, 2])
    latent: int = 32
    max_epochs: int = 60
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    noise_std: float = 0.01
    folds: int = 5
    quantile: float = 0.95
    metric: str = "line_cosine"
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if not (len(self.channels) == len(self.kernel_sizes) == len(self.pools)) or not self.channels:
            raise TrainerError("autoencoder channels, kernel_sizes and pools must be non-empty lists of equal length")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes) or any(p < 1 for p in self.pools) or self.pools[0] != 1:
            raise TrainerError("autoencoder kernel sizes must be odd and ≥ 1, pools ≥ 1 with pools[0] = 1")
        if self.patch < 1:
            raise TrainerError(f"autoencoder patch must be ≥ 1, got {self.patch}")
        if self.metric not in METRICS:
            raise TrainerError(f"novelty metric must be one of {METRICS}, got {self.metric!r}")
        if self.latent < 1 or self.max_epochs < 1 or self.batch_size < 1:
            raise TrainerError("autoencoder latent, max_epochs and batch_size must be ≥ 1")
        if self.folds < 2:
            raise TrainerError(f"novelty calibration needs folds ≥ 2, got {self.folds}")
        if not 0.5 <= self.quantile < 1.0:
            raise TrainerError(f"novelty quantile must be in [0.5, 1), got {self.quantile}")



    def architecture(self) -> dict[str, Any]:
        """The architecture fields recorded in the manifest."""
        return {k: getattr(self, k) for k in ("patch", "channels", "kernel_sizes", "pools", "latent")}


class RamanAutoencoder(nn.Module):
    """Compact 1-D convolutional autoencoder with a dense bottleneck.

    Encoder: a patch convolution (kernel = stride = ``patch``: N points → N/patch positions), then per stage
    Conv1d(k, stride = pool) → LeakyReLU; flatten → Linear → ``latent``.
    Decoder (mirrored): Linear → LeakyReLU → reshape; per stage nearest Upsample(pool) → Conv1d(k) →
    LeakyReLU; a last Conv1d(k=3) to ``patch`` channels that a reshape lays back out as ``patch`` neighbouring
    points (a 1-D "pixel shuffle"), with no activation (spectra can be negative). Working at N/patch
    positions keeps training and inference cheap (~0.6 M multiply-adds per spectrum for N = 1392) while
    the last layer still places every grid point. The input is zero-padded on the right to a multiple of
    the total downsampling and the output cropped back, so the model exports to ONNX with a dynamic batch.

    Parameters
    ----------
    n_points : int
        Spectrum length N (grid points).
    config : AEConfig

    Input shape (B, N) float32 (preprocessed spectra); output (B, N) float32, the reconstruction.
    """

    def __init__(self, n_points: int, config: AEConfig | None = None) -> None:
        super().__init__()
        cfg = config or AEConfig()
        self.config, self.n_points = cfg, int(n_points)
        factor = cfg.patch * math.prod(cfg.pools)
        self.padded = int(math.ceil(self.n_points / factor) * factor)
        self.code_length = self.padded // factor
        self.patch = cfg.patch
        c_in = cfg.channels[0]
        enc: list[nn.Module] = [nn.Conv1d(1, c_in, cfg.patch, stride=cfg.patch), nn.LeakyReLU(0.01)]
        for c, k, p in zip(cfg.channels[1:], cfg.kernel_sizes[1:], cfg.pools[1:], strict=True):
            enc += [nn.Conv1d(c_in, c, k, stride=p, padding=k // 2), nn.LeakyReLU(0.01)]
            c_in = c
        self.encoder = nn.Sequential(*enc)
        self.code_channels = c_in
        flat = c_in * self.code_length
        self.to_latent = nn.Linear(flat, cfg.latent)
        self.from_latent = nn.Sequential(nn.Linear(cfg.latent, flat), nn.LeakyReLU(0.01))
        dec: list[nn.Module] = []
        for c_out, k, p in zip(reversed(cfg.channels[:-1]), reversed(cfg.kernel_sizes[1:]), reversed(cfg.pools[1:]), strict=True):
            if p > 1:
                dec.append(nn.Upsample(scale_factor=p, mode="nearest"))
            dec += [nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.LeakyReLU(0.01)]
            c_in = c_out
        k0 = cfg.kernel_sizes[0]
        dec.append(nn.Conv1d(c_in, cfg.patch, k0, padding=k0 // 2))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes, shape (B, latent), of spectra of shape (B, N)."""
        x = x.unsqueeze(1)
        if self.padded > self.n_points:
            x = F.pad(x, (0, self.padded - self.n_points))
        return self.to_latent(torch.flatten(self.encoder(x), 1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructions, shape (B, N), of latent codes of shape (B, latent)."""
        h = self.from_latent(z).reshape(-1, self.code_channels, self.code_length)
        y = self.decoder(h)                              # (B, patch, padded / patch)
        y = y.transpose(1, 2).reshape(-1, self.padded)   # point j·patch + i comes from channel i, position j
        return y[:, : self.n_points]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x``, shape (B, 1, N) float32."""
        return self.decode(self.encode(x))


@torch.no_grad()
def ae_scores(model: RamanAutoencoder, x: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Both novelty scores of preprocessed spectra (see the module docstring).

    Parameters
    ----------
    model : RamanAutoencoder
    x : numpy.ndarray, shape (B, N) or (B, C, N), float32
        Preprocessed spectra (channel 0 is used).

    Returns
    -------
    dict
        ``line_cosine`` and ``mse``, each shape (B,), float64.
    """
    model.eval()
    x = primary_channel(x)
    out: dict[str, list[np.ndarray]] = {"line_cosine": [], "mse": []}
    for i in range(0, len(x), batch_size):
        xb = np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)
        r = model(torch.from_numpy(xb)).numpy()
        line, mse = residual_scores(xb, r, HIGHPASS_POINTS)
        out["mse"].append(mse)
        out["line_cosine"].append(line)
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}


def fit_autoencoder(x_raw: np.ndarray, pre: Preprocessor, cfg: AEConfig | None = None,
                    seed: int | None = None) -> tuple[RamanAutoencoder, list[dict[str, float]]]:
    """Fit one autoencoder on nominal spectra (loss: mean squared error against the clean spectrum).

    Parameters
    ----------
    x_raw : numpy.ndarray, shape (B, N), float32
        Spectra on the model grid, before preprocessing.
    pre : Preprocessor
        The bundle's preprocessing (applied to the noisy input and to the clean target; channel 0).
    cfg : AEConfig
    seed : int, optional
        Overrides ``cfg.seed`` (the folds use distinct seeds).

    Returns
    -------
    (RamanAutoencoder, list of dict)
        The model (eval mode) and the per-epoch training loss.

    Raises
    ------
    TrainerError
        If there are fewer than 2 spectra.
    """
    cfg = cfg or AEConfig()
    if len(x_raw) < 2:
        raise TrainerError(f"an autoencoder needs at least 2 nominal spectra, got {len(x_raw)}")
    seed = cfg.seed if seed is None else seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(max(1, cfg.threads))
    model = RamanAutoencoder(x_raw.shape[1], cfg)
    clean = np.ascontiguousarray(primary_channel(pre(x_raw, None)), dtype=np.float32)
    target = torch.from_numpy(clean)
    noise = AugmentConfig(max_shift_cm1=0.0, intensity_scale=0.0, fluorescence=0.0, noise_std=cfg.noise_std,
                          probability=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.max_epochs * math.ceil(len(x_raw) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=cfg.lr * 0.05)
    history: list[dict[str, float]] = []
    for epoch in range(cfg.max_epochs):
        model.train()
        order = rng.permutation(len(x_raw))
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if cfg.noise_std > 0:
                xb = np.ascontiguousarray(primary_channel(pre(augment_batch(x_raw[idx], noise, rng), None)),
                                          dtype=np.float32)
            else:
                xb = clean[idx]
            loss = F.mse_loss(model(torch.from_numpy(xb)), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch + 1, "loss": total / len(x_raw)})
    model.eval()
    return model, history


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index of each spectrum, shape (B,), int64; -1 for spectra of single-spectrum classes (never held
    out). Each class's spectra are spread over the folds in a random order, starting at a random fold.
    """
    rng = np.random.default_rng(seed)
    folds = np.full(len(labels), -1, dtype=np.int64)
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        idx = rng.permutation(idx)
        folds[idx] = (rng.integers(k) + np.arange(len(idx))) % k
    return folds


@dataclass
class NoveltyFit:
    """Result of :func:`fit_novelty`.

    Attributes
    ----------
    model : RamanAutoencoder
        Fitted on all training spectra.
    config : AEConfig
    threshold : float
        ``quantile(oof[config.metric], config.quantile)``.
    oof : dict of str to numpy.ndarray
        Out-of-fold scores per metric, shape (B,), float64; NaN for spectra never held out.
    folds : numpy.ndarray, shape (B,), int64
    train_scores : dict of str to numpy.ndarray
        In-sample scores of the final model, shape (B,).
    prototypes : numpy.ndarray, shape (K, N), float32
        Class means of the preprocessed training spectra (channel 0), in ``labels`` order.
    labels : list of str
    history : list of dict
        Training loss of the final model.
    seconds : float
        Wall time of the whole fit (folds included).
    library : edge.novelty.SpectralLibrary
        The training spectra as a spectral library, in ``labels`` order.
    library_calibration : numpy.ndarray, shape (L,), float64
        Leave-one-out library scores of the training spectra (NaN for single-spectrum classes).
    library_threshold : float
        ``quantile(finite library_calibration, config.quantile)``.
    """

    model: RamanAutoencoder
    config: AEConfig
    threshold: float
    oof: dict[str, np.ndarray]
    folds: np.ndarray
    train_scores: dict[str, np.ndarray]
    prototypes: np.ndarray
    labels: list[str]
    history: list[dict[str, float]]
    seconds: float
    library: SpectralLibrary | None = None
    library_calibration: np.ndarray | None = None
    library_threshold: float = math.nan

    def calibration(self, metric: str | None = None) -> np.ndarray:
        """Out-of-fold nominal scores of ``metric`` (default: the thresholded one), NaNs dropped."""
        v = self.oof[metric or self.config.metric]
        return v[np.isfinite(v)]


def fit_novelty(train: SpectraSet, preprocessing: PreprocessConfig, cfg: AEConfig | None = None,
                classes: list[str] | None = None) -> NoveltyFit:
    """Fit the novelty autoencoder and set its threshold from out-of-fold nominal scores.

    Parameters
    ----------
    train : SpectraSet
        Nominal training spectra (the classifier's training set).
    preprocessing : PreprocessConfig
        The bundle's preprocessing.
    cfg : AEConfig
    classes : list of str, optional
        Label order of the prototypes (default: sorted training labels; pass the bundle's labels).

    Returns
    -------
    NoveltyFit

    Raises
    ------
    TrainerError
        If fewer than ``cfg.folds`` spectra can be held out, or a label is not in ``classes``.
    """
    cfg = cfg or AEConfig()
    t0 = time.perf_counter()
    pre = Preprocessor(preprocessing)
    x_raw = resample(train.intensities, train.raman_shift_cm1, preprocessing.grid)
    labels = np.asarray(train.labels).astype(str)
    classes = list(classes) if classes is not None else sorted(set(labels.tolist()))
    missing = sorted(set(labels.tolist()) - set(classes))
    if missing:
        raise TrainerError(f"training labels not in the class list: {missing[:5]}")
    folds = stratified_folds(labels, cfg.folds, cfg.seed)
    if np.count_nonzero(folds >= 0) < cfg.folds:
        raise TrainerError("too few spectra in classes with ≥ 2 spectra to calibrate a novelty threshold")
    x_pre = np.ascontiguousarray(primary_channel(pre(x_raw, None)), dtype=np.float32)
    oof = {m: np.full(len(labels), np.nan) for m in METRICS}
    for f in range(cfg.folds):
        held = folds == f
        if not held.any():
            continue
        m, _ = fit_autoencoder(x_raw[~held], pre, cfg, seed=cfg.seed + 1 + f)
        for k, v in ae_scores(m, x_pre[held]).items():
            oof[k][held] = v
    model, history = fit_autoencoder(x_raw, pre, cfg)
    calib = oof[cfg.metric][np.isfinite(oof[cfg.metric])]
    threshold = float(np.quantile(calib, cfg.quantile))
    protos = class_mean_spectra(x_pre, labels, classes)
    library = SpectralLibrary.from_spectra(x_pre, labels, classes, LIBRARY_SHIFT_TOLERANCE_CM1,
                                           preprocessing.grid.step_cm1)
    lib_calib = library.leave_one_out_scores()
    lib_thr = float(np.quantile(lib_calib[np.isfinite(lib_calib)], cfg.quantile))
    return NoveltyFit(model, cfg, threshold, oof, folds, ae_scores(model, x_pre), protos, classes,
                      history, time.perf_counter() - t0, library, lib_calib, lib_thr)


# -- classifier-only scores ------------------------------------------------------------------------------
@torch.no_grad()
def classifier_outputs(model, x: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Logits (B, K) and backbone embeddings (B, D), float32, of preprocessed spectra (B, N)."""
    model.eval()
    logits, emb = [], []
    for i in range(0, len(x), batch_size):
        e = model.embedding(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)))
        emb.append(e.numpy())
        logits.append(model.classifier(e).numpy())
    return np.concatenate(logits), np.concatenate(emb)


def class_prototypes(embeddings: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class prototypes: the mean L2-normalised embedding of each class, re-normalised; shape (K, D),
    float32 (a zero row for a class without spectra).
    """
    z = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    protos = np.zeros((n_classes, z.shape[1]), dtype=np.float32)
    for c in range(n_classes):
        sel = y == c
        if sel.any():
            m = z[sel].mean(axis=0)
            protos[c] = m / max(float(np.linalg.norm(m)), 1e-12)
    return protos


def classifier_scores(logits: np.ndarray, embeddings: np.ndarray, prototypes: np.ndarray) -> dict[str, np.ndarray]:
    """The classifier-only novelty scores (higher = more novel), each shape (B,), float64.

    Parameters
    ----------
    logits : numpy.ndarray, shape (B, K)
    embeddings : numpy.ndarray, shape (B, D)
    prototypes : numpy.ndarray, shape (K, D)
        From :func:`class_prototypes` (unit rows; zero rows are ignored).

    Returns
    -------
    dict
        ``msp`` (1 − max softmax), ``energy`` (−logsumexp of the logits), ``prototype`` (cosine distance to
        the nearest prototype).
    """
    lg = logits.astype(np.float64)
    mx = lg.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))
    msp = np.exp(mx[:, 0] - lse)
    z = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sim = z @ prototypes.T
    sim[:, np.linalg.norm(prototypes, axis=1) == 0] = -np.inf
    return {"msp": 1.0 - msp, "energy": -lse, "prototype": 1.0 - sim.max(axis=1)}


def nearest_neighbour_distance(embeddings: np.ndarray, library: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """Deep nearest-neighbour novelty score (Sun et al. 2022, "Out-of-distribution detection with deep nearest
    neighbors"): cosine distance of each backbone embedding to its nearest training embedding.

    Parameters
    ----------
    embeddings : numpy.ndarray, shape (B, D)
    library : numpy.ndarray, shape (L, D)
        Embeddings of the training spectra.
    leave_one_out : bool
        ``embeddings`` *is* ``library`` (B = L): skip each row's match with itself, which gives the nominal
        calibration scores a threshold is taken from.

    Returns
    -------
    numpy.ndarray, shape (B,), float64
        1 − the largest cosine similarity (higher = more novel).

    Raises
    ------
    ValueError
        If ``leave_one_out`` is set and the shapes differ, or the library has fewer than 2 rows then.
    """
    def unit(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    sim = unit(embeddings) @ unit(library).T
    if leave_one_out:
        if sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
            raise ValueError(f"leave_one_out needs the library itself (≥ 2 rows), got {sim.shape}")
        np.fill_diagonal(sim, -np.inf)
    return 1.0 - sim.max(axis=1)


# -- bundle ------------------------------------------------------------------------------------------------
def _library_definition(library: SpectralLibrary) -> str:
    """The manifest's words for the library score."""
    line = (f"line component of the preprocessed spectrum (channel 0 minus its {library.window}-point centred "
            "moving average)")
    if library.band_power is None:
        what, rng = f"the {line}", "[0, 2]"
    else:
        what, rng = f"the band profile (positive part of the {line}, raised to {library.band_power:g})", "[0, 1]"
    return (f"1 - max cosine similarity of {what}, shifted by up to ±{library.shift_points} grid points, with "
            f"the same of the training spectra of the predicted class; dimensionless, in {rng}")


def save_novelty(bundle: Bundle, fit: NoveltyFit, classifier=None, train: SpectraSet | None = None) -> dict[str, Any]:
    """Write the autoencoder, prototypes and ``manifest["novelty"]`` into a bundle (and save it).

    Parameters
    ----------
    bundle : Bundle
        A bundle whose labels the novelty fit used (``fit.labels``).
    fit : NoveltyFit
    classifier : RamanCNN, optional
        The bundle's classifier: adds the in-sample classifier-only scores and the embedding prototypes.
    train : SpectraSet, optional
        The training spectra (needed with ``classifier``).

    Returns
    -------
    dict
        The ``manifest["novelty"]`` section.

    Raises
    ------
    BundleError
        If the labels differ from the bundle's.
    """
    if list(fit.labels) != bundle.labels:
        raise BundleError("novelty prototypes were computed for another label list than the bundle's")
    torch.save(fit.model.state_dict(), bundle.path / AE_PT_FILE)
    bundle.add_file(AE_PT_FILE, role="novelty-autoencoder-state-dict")
    arrays: dict[str, np.ndarray] = {"spectrum_prototypes": fit.prototypes}
    calibration: dict[str, Any] = {}
    for metric in METRICS:
        calib = fit.calibration(metric)
        arrays[f"calibration_{metric}"] = calib
        calibration[metric] = {
            "n": int(calib.size), "mean": float(calib.mean()), "median": float(np.median(calib)),
            "log_mean": float(np.log(calib).mean()), "log_std": float(np.log(calib).std()),
            "quantiles": {str(q): float(np.quantile(calib, q)) for q in (0.5, 0.9, 0.95, 0.99)},
            "in_sample_median": float(np.median(fit.train_scores[metric])),
        }
    descriptions = {"line_cosine": "1 - cosine similarity of the line components (spectrum minus its "
                                   f"{HIGHPASS_POINTS}-point centred moving average) of the preprocessed "
                                   "spectrum and of its reconstruction; dimensionless, in [0, 2]",
                    "mse": "mean over the grid of (preprocessed spectrum - reconstruction)^2"}
    section: dict[str, Any] = {
        "schema": NOVELTY_SCHEMA,
        "detector": "autoencoder-reconstruction-error",
        "metric": fit.config.metric,
        "metric_description": descriptions[fit.config.metric],
        "highpass_points": HIGHPASS_POINTS,
        "quantile": fit.config.quantile,
        "threshold": fit.threshold,
        "calibration": {
            "method": f"{fit.config.folds}-fold out-of-fold scores of the nominal training spectra (folds "
                      "stratified by class, single-spectrum classes never held out); the shipped "
                      "autoencoder is fitted on all of them; no anomalous spectrum is used",
            "quantile_method": "numpy.quantile, linear interpolation",
            "metrics": calibration,
        },
        "autoencoder": {"architecture": "RamanAutoencoder", "settings": fit.config.to_dict(),
                        "n_parameters": int(sum(p.numel() for p in fit.model.parameters())),
                        "n_points": fit.model.n_points, "input": "spectra", "output": "reconstruction",
                        "final_loss": fit.history[-1]["loss"] if fit.history else None,
                        "seconds": round(fit.seconds, 2)},
        "files": {"pytorch": AE_PT_FILE, "prototypes": PROTOTYPES_FILE},
    }
    if classifier is not None and train is not None:
        from .train import encode_labels

        pre = Preprocessor(bundle.preprocessing)
        x = pre(train.intensities, train.raman_shift_cm1)
        y = encode_labels(train.labels, bundle.labels)
        logits, emb = classifier_outputs(classifier, x)
        eprotos = class_prototypes(emb, y, len(bundle.labels))
        scores = classifier_scores(logits, emb, eprotos)
        arrays["embedding_prototypes"] = eprotos
        per_class = {}
        for c, name in enumerate(bundle.labels):
            sel = y == c
            if sel.any():
                per_class[name] = {"n": int(sel.sum()), **{f"{k}_mean": float(v[sel].mean()) for k, v in scores.items()}}
        section["classifier_scores"] = {
            "calibration": "in-sample: the classifier's own training spectra (optimistic; informational)",
            "definitions": {"msp": "1 - max softmax probability", "energy": "-logsumexp(logits)",
                            "prototype": "1 - cosine similarity of the backbone embedding to the nearest "
                                         "class prototype (mean L2-normalised training embedding)"},
            "thresholds": {k: float(np.quantile(v, fit.config.quantile)) for k, v in scores.items()},
            "quantile": fit.config.quantile,
            "per_class": per_class,
        }
    if fit.library is not None and fit.library_calibration is not None:
        lib_calib = fit.library_calibration[np.isfinite(fit.library_calibration)]
        arrays["calibration_library"] = lib_calib
        np.savez(bundle.path / LIBRARY_FILE, **cast(dict[str, Any], fit.library.arrays()))
        bundle.add_file(LIBRARY_FILE, role="novelty-spectral-library")
        section["files"]["library"] = LIBRARY_FILE
        section["library"] = {
            "detector": "spectral-library-match",
            "definition": _library_definition(fit.library),
            "shift_tolerance_cm1": fit.library.shift_points * bundle.grid.step_cm1,
            "shift_points": fit.library.shift_points, "highpass_points": fit.library.window,
            "band_power": fit.library.band_power,
            "n_spectra": len(fit.library.lines), "dtype": "float16",
            "quantile": fit.config.quantile, "threshold": fit.library_threshold,
            "calibration": {"method": "leave-one-out: each training spectrum matched against the other training "
                                      "spectra of its class (single-spectrum classes skipped); nominal data only",
                            "n": int(lib_calib.size),
                            "quantiles": {str(q): float(np.quantile(lib_calib, q)) for q in (0.5, 0.9, 0.95, 0.99)}},
        }
    np.savez(bundle.path / PROTOTYPES_FILE, **cast(dict[str, Any], arrays))
    bundle.add_file(PROTOTYPES_FILE, role="novelty-prototypes")
    bundle.manifest["novelty"] = section
    bundle.save()
    return section


def load_autoencoder(bundle: Bundle) -> RamanAutoencoder:
    """Rebuild the bundle's autoencoder (eval mode).

    Raises
    ------
    BundleError
        If the bundle has no novelty section or its weights do not fit the recorded architecture.
    """
    nov = bundle.manifest.get("novelty")
    if not nov or "autoencoder" not in nov:
        raise BundleError(f"{bundle.path}: no novelty autoencoder; train one with edge-train --novelty")
    a = nov["autoencoder"]
    model = RamanAutoencoder(int(a["n_points"]), AEConfig.from_dict(a["settings"]))
    try:
        model.load_state_dict(torch.load(bundle.file(nov["files"]["pytorch"]), map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as exc:
        raise BundleError(f"{bundle.path}: autoencoder weights do not load: {exc}") from exc
    model.eval()
    return model



def add_novelty_to_bundle(bundle: Bundle, train: SpectraSet, test: SpectraSet | None, classifier,
                          settings, epochs: int | None = None, quantile: float | None = None) -> str:
    """``edge-train --novelty``: fit the autoencoder on the classifier's training spectra, write it into the
    bundle, and score the test spectra (all of known minerals: their novel rate is the false-alarm rate).

    Parameters
    ----------
    bundle : Bundle
        The freshly written classifier bundle.
    train, test : SpectraSet
        Training spectra; optional test spectra (reported, never used for the threshold).
    classifier : RamanCNN
    settings : TrainerSettings
        Seed and thread count are taken from ``settings.training``.
    epochs, quantile : optional
        Overrides of :class:`AEConfig`.

    Returns
    -------
    str
        A one-line summary.
    """
    cfg = AEConfig(seed=settings.training.seed, threads=settings.training.threads)
    if epochs is not None:
        cfg.max_epochs = int(epochs)
    if quantile is not None:
        cfg.quantile = float(quantile)
    cfg.__post_init__()
    fit = fit_novelty(train, settings.preprocessing, cfg, classes=bundle.labels)
    section = save_novelty(bundle, fit, classifier=classifier, train=train)
    library = fit.library
    if library is None:  # fit_novelty always builds one; a FitResult without it comes only from old bundles
        raise TrainerError("novelty fit has no spectral library")
    msg = (f"novelty autoencoder: {section['autoencoder']['n_parameters']} parameters, {fit.seconds:.1f} s; "
           f"threshold {fit.threshold:.4g} ({section['metric']}, {100 * cfg.quantile:g} % quantile of "
           f"{fit.calibration().size} out-of-fold nominal scores); spectral library: {len(library.lines)} "
           f"spectra, threshold {fit.library_threshold:.4g}")
    if test is not None:
        x = Preprocessor(settings.preprocessing)(test.intensities, test.raman_shift_cm1)
        s = ae_scores(fit.model, x)
        rate = float(np.mean(s[cfg.metric] > fit.threshold))
        logits, _ = classifier_outputs(classifier, x)
        lib, _ = library.scores(x, np.asarray(bundle.labels)[logits.argmax(axis=1)])
        lib_rate = float(np.mean(lib > fit.library_threshold))
        bundle.metrics["novelty_test"] = {"n": len(test), "source": test.source, "novel_rate": rate,
                                          "library_novel_rate": lib_rate,
                                          "note": "test spectra are of known minerals: novel_rate is a false-alarm rate"}
        bundle.save()
        msg += (f"; test spectra flagged novel: {100 * rate:.1f} % by the autoencoder, {100 * lib_rate:.1f} % by the "
                f"library (nominal: expect ≈ {100 * (1 - cfg.quantile):g} %)")
    return msg
