"""Drift of the instrument over a stream of predictions: Page–Hinkley tests and the moving Raman-shift offset
(see the :mod:`edge.novelty` docstring, "Drift").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import numpy as np

from ..errors import ConfigError
from .offsets import estimate_offsets, offset_reference_fft, offset_spectra_fft, reference_line_offset
from .scores import primary_channel

__all__ = ["CHANNELS", "DriftConfig", "DriftMonitor", "PageHinkley", "batch_rows"]

CHANNELS = ("novelty", "residual", "confidence", "background")


class PageHinkley:
    """Page–Hinkley test for an increase of the mean of a stream (Page 1954; Hinkley 1971).

    With ``x̄_t`` the running mean since the last reset, the cumulative statistic and its minimum are::

        m_T = Σ_{t ≤ T} (x_t − x̄_t − δ),    M_T = min_{t ≤ T} m_t,

    and an alarm is raised when ``PH_T = m_T − M_T > λ`` (after at least ``min_instances`` values). ``δ``
    is the size of a mean change that is tolerated, ``λ`` trades detection delay (≈ λ / (Δ − δ) values for a
    step of Δ) against false alarms (for i.i.d. values of unit variance the rate falls roughly as
    exp(−2δλ)). The change is estimated to have begun just after the last time ``m`` reached its minimum.
    After an alarm the test resets, so a persisting change raises one alarm, not one per value.

    Parameters
    ----------
    delta : float
        δ, in the units of the values (≥ 0).
    threshold : float
        λ (> 0).
    min_instances : int
        Values seen before an alarm is possible.
    """

    def __init__(self, delta: float = 0.5, threshold: float = 15.0, min_instances: int = 30) -> None:
        if delta < 0 or threshold <= 0 or min_instances < 1:
            raise ConfigError(f"Page–Hinkley needs delta ≥ 0, threshold > 0, min_instances ≥ 1; got "
                              f"{delta}, {threshold}, {min_instances}")
        self.delta, self.threshold, self.min_instances = float(delta), float(threshold), int(min_instances)
        self.change_tag: Any = None
        self.alarm_statistic = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the running mean too)."""
        self.n, self.mean, self.sum, self.min_sum = 0, 0.0, 0.0, 0.0
        self.min_at: Any = None
        self.after_min: Any = None
        self.first: Any = None

    @property
    def statistic(self) -> float:
        """Current ``m_T − M_T`` (≥ 0)."""
        return self.sum - self.min_sum

    def update(self, x: float, tag: Any = None) -> bool:
        """Add one value; True when it raises an alarm (the test then resets).

        ``tag`` (e.g. a (sequence number, time) pair) is remembered so :attr:`change_tag` can say when the
        change began: the tag of the first value after the minimum of ``m``.
        """
        self.n += 1
        if self.n == 1:
            self.first = tag
        self.mean += (x - self.mean) / self.n
        self.sum += x - self.mean - self.delta
        if self.sum <= self.min_sum:
            self.min_sum, self.min_at, self.after_min = self.sum, tag, None
        elif self.after_min is None:
            self.after_min = tag
        if self.n >= self.min_instances and self.statistic > self.threshold:
            self.change_tag = self.after_min
            self.alarm_statistic = self.statistic
            self.reset()
            return True
        return False


@dataclass
class DriftConfig:
    """Settings of the drift monitor (``[daemon.drift]`` in ``configs/daemon.toml``).

    Parameters
    ----------
    warmup : int
        Spectra used to standardise each statistic (assumed nominal); no alarm before.
    ph_delta, ph_threshold : float
        Page–Hinkley δ and λ, in standard deviations of the warm-up values. λ = 15 with δ = 0.5: for
        Gaussian values fewer than one false alarm in 10⁶ spectra per statistic; a 1.5 σ step is found after
        about 15 spectra.
    background_delta, background_threshold : float
        Page–Hinkley δ and λ of the ``background`` statistic. A fluorescence background of 20 % of the peak
        height moves it by only ≈ 0.4 warm-up standard deviations (nominal raw spectra differ widely in
        background), below the general δ, so it gets a smaller δ and a larger λ: δ = 0.2, λ = 25 raised no
        false alarm in 20 000 nominal real spectra and found a 0 → 100 % ramp a median of ≈ 100 spectra
        after it crossed 20 % (δ = 0.5: 200–400 spectra or never).
    clip : float
        Standardised values are clipped to ±clip (one odd spectrum moves a statistic by at most this much).
    channels : list of str
        Statistics watched by Page–Hinkley tests (``novelty``, ``residual``, ``confidence``, ``background``).
    offset_window : int
        Spectra in the moving median of the offset estimate.
    offset_alarm_cm1 : float
        Alarm when the moving-median offset exceeds this magnitude, cm⁻¹.
    offset_max_lag_cm1 : float
        Largest offset searched, cm⁻¹.
    offset_top_k : int
        Reference spectra (the classifier's top classes) correlated with each spectrum; 0: every class's
        reference (needed with a precise network: under a large drift its top classes are wrong, so their
        references cannot measure the drift).
    offset_fallback_all : bool
        Also correlate each spectrum with every class's reference, and take that match instead of the top
        classes' when its peak correlation is higher by more than ``offset_all_margin``: under a drift larger
        than a precise network tolerates its top classes are wrong and match poorly, while without drift the
        top classes keep the estimate (the best match over all references alone can be another mineral at a
        large lag, e.g. calcite read as cerussite 34 cm⁻¹ away).
    offset_all_margin : float
        Margin of peak normalised correlation for ``offset_fallback_all`` (≥ 0).
    offset_fallback_max : int
        At most this many spectra of an offset block (the worst top-k matches) are searched against every
        reference: the search costs ~1.5 to 3 ms per spectrum on one core, so this bounds it under a backlog
        (micro-batches of up to ``max_batch`` spectra) while spectra arriving one by one are all searched.
    offset_min_classes : int
        Drift compensation applies the estimate only when the estimates in the window matched the references
        of at least this many different classes: an offset belongs to the instrument and shows on every
        mineral, while a stream of one mineral can match another mineral's reference at a large lag just as
        well (calcite as cerussite 31 cm⁻¹ away, as dolomite 8 cm⁻¹ away: CHARISMA calcite, docs/instruments.md).
        The estimate and its alarm are unaffected. 1: no such condition.
    offset_min_estimates : int
        Offset estimates needed before the moving median (and the compensation) exists; 0: half the window
        (at least 3).
    offset_min_quality : float
        Offset estimates whose peak normalised correlation is below this are ignored.
    offset_batch : int
        Spectra collected before their offsets are estimated together (one vectorised correlation per block;
        an offset alarm can come up to this many spectra later).
    reference_line_cm1 : float
        Line of the calibration standard, cm⁻¹ (silicon 520.7; some tools use 520.45).
    reference_label : str
        Spectra labelled so (``label`` field) are treated as measurements of the standard ("" disables).
    batch_max : int
        Under a flood: the daemon's drift bookkeeping (:meth:`edge.novelty.NoveltyService.observe`: the
        autoencoder's scores, the Page–Hinkley statistics, the background level and the offset estimate) takes
        at most this many spectra of one micro-batch, evenly spaced over it (the first and the last included),
        and skips the others; 0: every spectrum. It costs ~0.12 ms a spectrum at batch 64 (offsets ~0.09,
        autoencoder ~0.03), a third of the daemon's CPU time; a micro-batch larger than this only forms under a
        backlog. Spectra arriving one by one are unaffected; calibration-standard spectra are always measured.
        Measured (issue #17, ``edge-bench instruments --dev`` recipes ``flood64_batch_max*``): 32 keeps the
        development rows fed in batches of 64 within 0.4 points, 16 loses 5 points on the 30 cm⁻¹
        offset-drift row.
    compensate_offset : bool
        Drift compensation: preprocess every spectrum with the current moving-median offset estimate
        (``offset_cm1``) removed (:class:`edge.preprocess.Preprocessor` ``offset_cm1``); each prediction
        states the correction it used (``offset_correction_cm1``). The estimate keeps measuring the
        instrument's own offset (correction + what remains), so offset alarms still fire. Needs the bundle's
        novelty section (its class-mean reference spectra).
    """

    warmup: int = 200
    ph_delta: float = 0.5
    ph_threshold: float = 15.0
    background_delta: float = 0.2
    background_threshold: float = 25.0
    clip: float = 3.0
    channels: tuple[str, ...] = ("novelty", "residual", "confidence", "background")
    offset_window: int = 25
    offset_alarm_cm1: float = 3.0
    offset_max_lag_cm1: float = 40.0
    offset_top_k: int = 3
    offset_fallback_all: bool = True
    offset_all_margin: float = 0.2
    offset_fallback_max: int = 4
    offset_min_estimates: int = 5
    offset_min_classes: int = 3
    offset_batch: int = 1
    offset_min_quality: float = 0.5
    reference_line_cm1: float = 520.7
    reference_label: str = "silicon"
    compensate_offset: bool = True
    batch_max: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        bad = set(self.channels) - set(CHANNELS)
        if bad:
            raise ConfigError(f"unknown drift channel(s) {sorted(bad)}; known: {', '.join(CHANNELS)}")
        if self.warmup < 10 or self.offset_window < 1 or self.offset_top_k < 0 or self.offset_batch < 1 or self.clip <= 0:
            raise ConfigError("drift warmup must be ≥ 10; offset_window, offset_batch ≥ 1; offset_top_k ≥ 0; clip > 0")
        if not isinstance(self.offset_fallback_all, bool) or not self.offset_all_margin >= 0 or \
                self.offset_fallback_max < 1:
            raise ConfigError("offset_fallback_all must be true or false, offset_all_margin ≥ 0 and "
                              f"offset_fallback_max ≥ 1, got {self.offset_fallback_all!r}, "
                              f"{self.offset_all_margin!r}, {self.offset_fallback_max!r}")
        if not 1 <= self.offset_min_classes <= self.offset_window:
            raise ConfigError(f"offset_min_classes must be in [1, offset_window = {self.offset_window}], got "
                              f"{self.offset_min_classes!r}")
        if not 0 <= self.offset_min_estimates <= self.offset_window:
            raise ConfigError(f"offset_min_estimates must be in [0, offset_window = {self.offset_window}], got "
                              f"{self.offset_min_estimates!r}")
        if isinstance(self.batch_max, bool) or not isinstance(self.batch_max, int) or self.batch_max < 0:
            raise ConfigError(f"batch_max must be an integer ≥ 0, got {self.batch_max!r}")
        if self.offset_alarm_cm1 <= 0 or self.offset_max_lag_cm1 <= 0:
            raise ConfigError("offset_alarm_cm1 and offset_max_lag_cm1 must be > 0")
        if not isinstance(self.compensate_offset, bool):
            raise ConfigError(f"compensate_offset must be true or false, got {self.compensate_offset!r}")
        for channel in ("novelty", "background"):  # validates both settings pairs
            self.page_hinkley(channel)

    def page_hinkley(self, channel: str) -> PageHinkley:
        """A fresh Page–Hinkley test with the δ and λ of ``channel``."""
        if channel == "background":
            return PageHinkley(self.background_delta, self.background_threshold, min_instances=30)
        return PageHinkley(self.ph_delta, self.ph_threshold, min_instances=30)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (``channels`` as a list), as ``[daemon.drift]`` and status messages hold them."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DriftConfig:
        """Settings from a ``[daemon.drift]`` table (None or empty: the defaults).

        Raises
        ------
        ConfigError
            For an unknown or invalid setting.
        """
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown drift setting(s): {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid drift settings: {exc}") from exc


class _Standardiser:
    """Mean and standard deviation of the first ``n`` values, then (x − mean) / std clipped to ±clip."""

    def __init__(self, n: int, clip: float) -> None:
        self.n, self.clip = n, clip
        self.values: list[float] = []
        self.mean: float | None = None
        self.std: float | None = None

    def __call__(self, x: float) -> float | None:
        if self.mean is None or self.std is None:  # (set together)
            self.values.append(x)
            if len(self.values) >= self.n:
                v = np.asarray(self.values)
                self.mean, self.std = float(v.mean()), float(max(v.std(), 1e-9))
                self.values = []
            return None
        return float(np.clip((x - self.mean) / self.std, -self.clip, self.clip))

    def batch(self, values: np.ndarray) -> list[float | None]:
        """:meth:`__call__` on each of ``values`` (shape (B,)) in order; once warmed up, one vectorised step
        (the same float64 arithmetic, value for value).
        """
        out: list[float | None] = []
        i = 0
        while i < len(values) and (self.mean is None or self.std is None):
            out.append(self(float(values[i])))
            i += 1
        if i < len(values) and self.mean is not None and self.std is not None:
            z = (np.asarray(values[i:], dtype=np.float64) - self.mean) / self.std
            out += np.clip(z, -self.clip, self.clip).tolist()
        return out


def batch_rows(b: int, m: int) -> np.ndarray:
    """Rows of a micro-batch of ``b`` spectra that the drift bookkeeping takes (:attr:`DriftConfig.batch_max`
    = ``m``): all of them when ``m`` is 0 or ``b ≤ m``, else ``m`` of them evenly spaced (first and last included).
    """
    if m <= 0 or b <= m:
        return np.arange(b)
    if m == 1:
        return np.array([b - 1])
    return np.unique(np.rint(np.arange(m) * ((b - 1) / (m - 1))).astype(np.intp))


def _median(values: list[float]) -> float:
    """``np.median`` of a short list of finite floats (the same value: the middle one, or the mean of the two
    middle ones), without numpy's per-call overhead (the offset window's median is taken once per estimate).
    """
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2.0


class DriftMonitor:
    """Stream-level drift detection over the daemon's predictions (see the module docstring).

    Parameters
    ----------
    config : DriftConfig
    references : numpy.ndarray, shape (R, N), optional
        Reference spectra for the offset estimate (the bundle's class-mean training spectra); None disables
        the offset estimate.
    step_cm1 : float
        Grid spacing, cm⁻¹.
    """

    def __init__(self, config: DriftConfig | None = None, references: np.ndarray | None = None,
                 step_cm1: float = 1.0) -> None:
        self.config = cfg = config or DriftConfig()
        self.step_cm1 = float(step_cm1)
        self.tests = {c: cfg.page_hinkley(c) for c in cfg.channels}
        self.std = {c: _Standardiser(cfg.warmup, cfg.clip) for c in cfg.channels}
        self.references = None if references is None else np.asarray(references, dtype=np.float64)
        self.max_lag = max(1, round(cfg.offset_max_lag_cm1 / self.step_cm1))
        self._ref_fft: np.ndarray | None = None
        if self.references is not None:
            self.max_lag = min(self.max_lag, self.references.shape[1] - 1)
            self._ref_fft = offset_reference_fft(self.references, self.references.shape[1], self.max_lag)
        # Expected background level of each class: the same statistic on its mean training spectrum.
        self._ref_background = None if self.references is None else np.median(self.references, axis=-1)
        self.offsets: deque[tuple[int, float, int]] = deque(maxlen=cfg.offset_window)  # (seq, cm⁻¹, reference)
        self._pending: list[tuple[int, np.ndarray, np.ndarray, float]] = []
        self.offset_cm1: float | None = None
        self.offset_alarmed = False
        self._offset_run_start: tuple[int, int] | None = None
        self.reference_offset_cm1: float | None = None
        self.alarms = 0
        self.seen = 0
        self.last_alarm: dict[str, Any] | None = None

    # -- per batch ------------------------------------------------------------------------------------------
    def update(self, seq: np.ndarray, time_ns: int, *, novelty: np.ndarray | None = None,
               residual: np.ndarray | None = None, msp: np.ndarray | None = None,
               spectra: np.ndarray | None = None, proba: np.ndarray | None = None,
               applied_offset_cm1: float = 0.0) -> list[dict[str, Any]]:
        """Feed one batch of predictions, in arrival order; return the alarms it raised.

        Parameters
        ----------
        seq : numpy.ndarray of int, shape (B,)
            Daemon sequence numbers of the predictions.
        time_ns : int
            Time of the batch (``time.time_ns()``).
        novelty, residual, msp : numpy.ndarray, shape (B,), optional
            Novelty score, reconstruction MSE and maximum softmax probability of each spectrum.
        spectra : numpy.ndarray, shape (B, N), optional
            Preprocessed spectra (for the offset estimate).
        proba : numpy.ndarray, shape (B, K), optional
            Class probabilities (the top ``offset_top_k`` classes pick the reference spectra).
        applied_offset_cm1 : float
            Offset already removed from ``spectra`` in preprocessing (drift compensation), cm⁻¹: added back
            to what is measured on them, so the estimate stays the instrument's offset.

        Returns
        -------
        list of dict
            Drift payloads (``type`` "drift"): ``kind`` (a channel name or "offset"),
            ``statistic``, ``threshold``, ``detected_seq``, ``detected_ns``, ``change_seq``, ``change_ns``,
            ``offset_cm1`` (current moving-median estimate or None), plus per-kind details.
        """
        cfg = self.config
        seq = np.asarray(seq)
        values = {"novelty": None if novelty is None else np.log(np.maximum(novelty, 1e-12)),
                  "residual": None if residual is None else np.log(np.maximum(residual, 1e-12)),
                  "confidence": None if msp is None else 1.0 - np.asarray(msp, dtype=np.float64),
                  "background": None if spectra is None or "background" not in self.tests
                  else self._background(spectra, proba)}
        events: list[dict[str, Any]] = []
        # standardised per channel first (each standardiser sees its values in order), then the tests value by value
        z_all = [(name, test, self.std[name].batch(np.asarray(v)[:len(seq)])) for name, test in self.tests.items()
                 if (v := values[name]) is not None]
        for i in range(len(seq)):
            s = int(seq[i])
            self.seen += 1
            for name, test, zs in z_all:
                z = zs[i]
                if z is not None and test.update(z, (s, time_ns)):
                    events.append(self._event(name, test.alarm_statistic, test.threshold, s, time_ns,
                                              test.change_tag, {"delta": test.delta, "units": "warm-up standard deviations"}))
        if spectra is not None and self.references is not None and self._ref_fft is not None:
            # Offsets are estimated in blocks of ``offset_batch`` spectra: one vectorised FFT correlation per
            # block instead of per spectrum (the daemon's micro-batches hold one spectrum at low rates).
            k = min(cfg.offset_top_k, len(self.references))
            cand = (np.argsort(-proba, axis=1, kind="stable")[:, :k] if proba is not None and k > 0
                    else np.broadcast_to(np.arange(len(self.references)), (len(seq), len(self.references))))
            x0 = primary_channel(spectra)
            for i in range(len(seq)):
                self._pending.append((int(seq[i]), x0[i], cand[i], float(applied_offset_cm1)))
            if len(self._pending) >= cfg.offset_batch:
                events += self._flush_offsets(time_ns)
        self.alarms += len(events)
        if events:
            self.last_alarm = events[-1]
        return events

    def _background(self, spectra: np.ndarray, proba: np.ndarray | None) -> np.ndarray:
        """Background level of each spectrum: the median of its max-normalised spectrum, minus that of the
        predicted class's mean training spectrum when the classes are known (removes most of the spread
        between minerals: +25 % effect size for a 20 % background on the real test spectra).
        """
        level = np.median(primary_channel(spectra), axis=-1)
        if proba is not None and self._ref_background is not None and proba.shape[-1] == len(self._ref_background):
            level = level - self._ref_background[np.argmax(proba, axis=-1)]
        return level

    def _flush_offsets(self, time_ns: int) -> list[dict[str, Any]]:
        cfg = self.config
        refs = self.references
        if refs is None:  # (spectra are queued only with references: see update)
            return []
        seqs = [p[0] for p in self._pending]
        x = np.stack([p[1] for p in self._pending])
        cand = np.stack([p[2] for p in self._pending])
        applied = np.array([p[3] for p in self._pending])
        self._pending = []
        xf = offset_spectra_fft(x, self.max_lag)  # once: the search against every reference reuses it
        off, quality, best = estimate_offsets(x, refs, cand, self.max_lag, references_fft=self._ref_fft, spectra_fft=xf)
        # Every reference only where it can win (peak correlations are ≤ 1): the all-reference search costs
        # ~20 times the top-k one, and good top-k matches (the usual case once the offset is compensated) skip it.
        # Under a backlog, at most ``offset_fallback_max`` per block, the worst top-k matches first.
        # The others that could have lost to it are left out of this block's estimates rather than trusted.
        rows = np.flatnonzero(quality < 1.0 - cfg.offset_all_margin) if cfg.offset_fallback_all and \
            cand.shape[1] < len(refs) else np.zeros(0, dtype=np.intp)
        rows, unsearched = np.split(rows[np.argsort(quality[rows], kind="stable")], [cfg.offset_fallback_max])
        quality[unsearched] = -np.inf
        if rows.size:
            off_all, q_all, best_all = estimate_offsets(x[rows], refs, None, self.max_lag,
                                                        references_fft=self._ref_fft, spectra_fft=xf[rows])
            better = q_all > quality[rows] + cfg.offset_all_margin
            off[rows] = np.where(better, off_all, off[rows])
            quality[rows] = np.where(better, q_all, quality[rows])
            best[rows] = np.where(better, best_all, best[rows])
        per_offset = np.where(quality >= cfg.offset_min_quality, off * self.step_cm1 + applied, np.nan)
        events = []
        for s, o, r in zip(seqs, per_offset, best, strict=True):
            if np.isfinite(o):
                self.offsets.append((s, float(o), int(r)))
                ev = self._offset_step(s, time_ns)
                if ev is not None:
                    events.append(ev)
        return events

    def _offset_step(self, s: int, time_ns: int) -> dict[str, Any] | None:
        cfg = self.config
        if len(self.offsets) < (cfg.offset_min_estimates or max(3, cfg.offset_window // 2)):
            return None
        self.offset_cm1 = _median([o for _, o, _ in self.offsets])
        mag = abs(self.offset_cm1)
        if mag > cfg.offset_alarm_cm1 / 2 and self._offset_run_start is None:
            self._offset_run_start = (s, time_ns)
        elif mag <= cfg.offset_alarm_cm1 / 2:
            self._offset_run_start = None
            self.offset_alarmed = False  # re-arm once the offset is back within half the limit
        if mag > cfg.offset_alarm_cm1 and not self.offset_alarmed:
            self.offset_alarmed = True
            return self._event("offset", mag, cfg.offset_alarm_cm1, s, time_ns, self._offset_run_start,
                               {"units": "cm-1", "window": len(self.offsets)})
        return None

    def _event(self, kind: str, statistic: float, threshold: float, s: int, time_ns: int,
               change: tuple[int, int] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
        change_seq, change_ns = change if change else (None, None)
        return {"type": "drift", "kind": kind, "statistic": float(statistic), "threshold": float(threshold),
                "detected_seq": s, "detected_ns": int(time_ns), "change_seq": change_seq, "change_ns": change_ns,
                "offset_cm1": self.offset_cm1, **extra}

    def reference(self, intensity: np.ndarray, raman_shift_cm1: np.ndarray, seq: int | None, time_ns: int) -> dict[str, Any]:
        """Measure the calibration standard's line; returns a drift payload of kind ``"reference"``.

        Raises
        ------
        PreprocessError
            If the spectrum does not cover the reference line.
        """
        cfg = self.config
        off, prom = reference_line_offset(intensity, raman_shift_cm1, cfg.reference_line_cm1)
        self.reference_offset_cm1 = off
        return {"type": "drift", "kind": "reference", "statistic": abs(off), "threshold": cfg.offset_alarm_cm1,
                "alarm": bool(abs(off) > cfg.offset_alarm_cm1), "reference_offset_cm1": off,
                "reference_line_cm1": cfg.reference_line_cm1, "prominence": prom, "detected_seq": seq,
                "detected_ns": int(time_ns), "change_seq": None, "change_ns": None, "offset_cm1": self.offset_cm1}

    @property
    def compensating(self) -> bool:
        """True when ``compensate_offset`` is on and its estimate exists (from enough classes)."""
        cfg = self.config
        if not cfg.compensate_offset or self.offset_cm1 is None:
            return False
        # one mineral's stream cannot tell an instrument offset from another mineral's lines
        return len({r for _, _, r in self.offsets}) >= cfg.offset_min_classes

    @property
    def correction_cm1(self) -> float:
        """Offset to remove from the next spectra (cm⁻¹): the moving-median estimate when
        ``compensate_offset`` is on (0 until the estimate exists), else 0.
        """
        return float(cast("float", self.offset_cm1)) if self.compensating else 0.0

    @property
    def offset_warming_up(self) -> bool:
        """True in the first ``offset_window`` spectra while ``compensate_offset`` is on and not compensating yet
        (the daemon then lets a micro-batch's own spectra bring the compensation in before it answers them).
        """
        return (self.config.compensate_offset and self.references is not None
                and self.seen < self.config.offset_window and not self.compensating)

    def status(self) -> dict[str, Any]:
        """Current state for the daemon's status messages."""
        return {"offset_cm1": self.offset_cm1, "correction_cm1": self.correction_cm1, "offset_n": len(self.offsets),
                "reference_offset_cm1": self.reference_offset_cm1, "alarms": self.alarms, "seen": self.seen,
                "warming_up": any(s.mean is None for s in self.std.values()),
                "statistics": {c: t.statistic for c, t in self.tests.items()},
                "last_alarm": None if self.last_alarm is None else {k: self.last_alarm[k] for k in
                                                                     ("kind", "detected_seq", "change_seq")}}

