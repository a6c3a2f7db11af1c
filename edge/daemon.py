"""The onboard daemon: spectra in (ZeroMQ PULL; serial via firmware_bridge), predictions out (ZeroMQ PUB).

One thread owns every socket (ZeroMQ sockets are not thread-safe) and runs a poll loop:

1. drain up to ``max_batch`` waiting input frames (micro-batching when a backlog builds up);
2. decode and validate each frame, preprocess it with the bundle's settings (:mod:`edge.preprocess`);
   a bad frame is counted, logged and answered on the ``error`` topic, never fatal;
3. classify the batch with the inference backend (INT8 ONNX when the bundle has it);
4. publish one ``prediction`` per spectrum, in arrival order, with a daemon sequence number.

Subscribers join through an XPUB socket: each new subscription makes the daemon publish a ``status``
message at once, so a client knows its subscription is live (no sleeping for the "slow joiner").
Other inputs (the serial link) run in their own threads and hand frames over an ``inproc://`` PUSH socket.
The catch-up endpoint (:mod:`edge.catchup`, with a store) runs in a thread of its own, with its own socket and
its own read connection to the store.
On stop (SIGINT/SIGTERM in the CLI) the daemon unbinds its input, answers what was already queued and returns
within ``drain_timeout_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import zmq

from .ack_input import AckInput, AckItem, Received, require_id
from .backends import create_backend
from .batch import BatchOutcome, classify_batch, rejection_detail, rejection_reason
from .bundle import Bundle
from .catchup import CatchUpServer
from .config_check import check_field_types
from .errors import ConfigError, EdgeError, WireError
from .heads import HeadSwitch, load_head
from .hygiene import Hygiene, InstrumentConfig
from .novelty import DETECTORS as NOVELTY_DETECTORS
from .novelty import DriftConfig, NoveltyService
from .output import CountingPublisher
from .preprocess import Preprocessor, RamanGrid
from .security import CurveServer, curve_sockets
from .socket_limits import BATCH_BYTES, REFILL_WAIT_MS, apply_limits, receive_batch
from .store import PRIORITY, Admission, Arrival, Store, StoreConfig, StoredResult, dedup_key
from .wire import (
    TOPICS,
    WIRE_VERSION,
    SpectrumIn,
    decode_event,
    decode_spectrum,
    encode_payload,
    event_type,
    peek_identity,
)

__all__ = ["INTERNAL_INPUT", "STORED_INPUT", "Daemon", "DaemonConfig", "stored_input_message"]
log = logging.getLogger("edge.daemon")
T = TypeVar("T")
INTERNAL_INPUT = "inproc://raman-edge-internal-input"

# -- issue 17, serial custody: an internal input that another thread already stored (edge.serial_input) --------
STORED_INPUT = b"raman-edge/stored"
"""First frame of an internal message naming a spectrum already stored by the thread that received it:
``[STORED_INPUT, row (u64 LE), received_ns (u64 LE), the spectrum's frame]``. The daemon answers it like a replayed
input (classified, its result stored against ``row``) without storing it again. Only the internal (inproc) input
carries it."""


def stored_input_message(row: int, received_ns: int, frame: bytes) -> list[bytes]:
    """The internal message handing over stored spectrum ``row`` (:data:`STORED_INPUT`).

    Parameters
    ----------
    row : int
        Its ``spectra.row`` in the store.
    received_ns : int
        When it was received, ns since the epoch.
    frame : bytes
        The spectrum as stored (msgpack, docs/wire.md §4).

    Returns
    -------
    list of bytes
        The multipart message to send on :data:`INTERNAL_INPUT`.
    """
    return [STORED_INPUT, row.to_bytes(8, "little"), received_ns.to_bytes(8, "little"), frame]


def _stored_inputs(frames: Sequence[bytes | list[bytes]]) -> tuple[list[_Input], list[bytes | list[bytes]]]:
    """Split internal ``frames`` into already-stored spectra (as inputs with their ``row``) and the others."""
    stored: list[_Input] = []
    rest: list[bytes | list[bytes]] = []
    for f in frames:
        if isinstance(f, list) and len(f) == 4 and f[0] == STORED_INPUT:
            stored.append(_Input(f[3], "serial", int.from_bytes(f[2], "little"), row=int.from_bytes(f[1], "little")))
        else:
            rest.append(f)
    return stored, rest
# -- end serial custody ------------------------------------------------------------------------------------------


@dataclass
class DaemonConfig:
    """Daemon settings (``[daemon]`` table of ``configs/daemon.toml``; CLI options override).

    Parameters
    ----------
    bundle : str
        Model bundle folder.
    input : str
        ZeroMQ endpoint the PULL socket binds (``""`` for none, e.g. serial-only): fire and forget.
    ack_input : str
        ZeroMQ endpoint of the acknowledged input, a ROUTER (``""``: none; needs ``store``, refused at start
        without one): each spectrum (``id`` required) is acknowledged to its sender once stored (``stored``,
        ``duplicate`` for a resend, ``rejected``, ``not_stored`` when the store cannot write), so a sender such as
        :class:`edge.client.AckedSender` resends what was not acknowledged (:mod:`edge.ack_input`, docs/store.md).
    output : str
        ZeroMQ endpoint the PUB (XPUB) socket binds.
    precision : {"auto", "int8", "fp32"}
        Classifier to serve; ``auto`` prefers INT8.
    backend : str
        Inference backend name (``onnxruntime``; ``tensorrt`` where installed).
    threads : int
        Backend intra-op threads.
    max_batch : int
        Largest micro-batch.
    top_k : int
        Labels and probabilities per prediction.
    status_interval_s : float
        Period of status messages.
    store : str
        SQLite store file (``""``: no store): every input message is stored with its result, one transaction per
        micro-batch, before it is acknowledged and the result published; on start the daemon answers what was
        stored without a result (``replayed: true``), ``seq`` continues where it stopped, a resent spectrum (same
        ``instrument_id`` and ``id``) is not classified twice (:mod:`edge.store`, docs/store.md).
    catchup : str
        ZeroMQ endpoint of the catch-up socket (``""``: none; needs ``store``): a subscriber that was away asks for
        the stored results after the last ``seq`` it has and gets them in publication order (docs/wire.md §12,
        docs/store.md "Catch-up"), served by a thread of its own from its own read connection
        (:mod:`edge.catchup`), so a large catch-up does not stall classification.
    store_options : dict
        ``[daemon.store_options]``: ``max_bytes``, ``max_age_s`` (retention), ``max_rejected_frame_bytes``,
        ``retention_interval_s``, ``retry_s`` (:class:`edge.store.StoreConfig`).
    serial : str
        pyserial URL of an instrument (``""``: none).
    serial_baudrate : int
        Baud rate for a real serial port.
    control : str
        ZeroMQ endpoint of the REP control socket (``""``: none): ``load_head`` swaps the classification
        head between micro-batches, ``status`` answers the status (protocol in :mod:`edge.heads`).
    head : str
        Head file (:mod:`edge.heads` format) to serve from the start instead of the bundle's own head.
    heads_dir : str
        The only folder a control ``load_head`` path may point into, symlinks resolved (``""``: the bundle's
        folder); outside it the request is refused with one message whether or not the file exists. Inline
        heads are not affected; ``head`` above (set by the operator) is not confined.
    novelty : bool
        Score novelty and watch for drift when the bundle has a novelty autoencoder (:mod:`edge.novelty`).
    novelty_detector : {"auto", "library", "autoencoder"}
        Which score decides each prediction's ``novel`` (:class:`edge.novelty.NoveltyModel`); ``"auto"``:
        the bundle's spectral library when it has one, else the autoencoder.
    drift : dict
        Drift-monitor settings (``[daemon.drift]``; :class:`edge.novelty.DriftConfig`).
    providers : list of str
        onnxruntime execution providers in order of preference (e.g. ``["TensorrtExecutionProvider",
        "CUDAExecutionProvider"]`` on a Jetson with onnxruntime-gpu); an unavailable one is refused at start.
    allow_cpu_fallback : bool
        Run on the CPU provider instead when a requested provider is unavailable (default: refuse).
    drain_timeout_s : float
        On stop (SIGTERM/SIGINT), the daemon unbinds its input (takes no new spectra), answers what is already
        queued and exits within this many seconds, even under a steady sender; input still queued at the
        deadline is not answered (a warning says so). The last fifth (at most 1 s) is kept for the final
        status and flushing the output.
    output_hwm : int
        Send high-water mark of the output socket, in messages queued per subscriber (≥ 1). A subscriber
        whose queue is full loses messages; the status counts them (``counters.dropped_hwm``, lower bound:
        docs/wire.md §7 "delivery"; :mod:`edge.output`). Lower it only to test that path.
    curve : list of str
        Sockets served with CurveZMQ (:mod:`edge.security`, docs/security.md): any of ``"control"``, ``"input"``,
        ``"output"``. The control socket is protected by default when its endpoint is reachable from the network
        (not ``tcp://127.*``, ``localhost``, ``[::1]``, ``ipc://``, ``inproc://``); a protected socket without
        ``curve_secret_key`` and ``curve_authorized_dir`` stops the daemon at start (keys: ``edge-keys``).
        Only clients whose public key is in ``curve_authorized_dir`` get through.
    curve_secret_key : str
        The daemon's secret key file (``NAME.key_secret`` from ``edge-keys new``); clients need its public
        ``NAME.key``. A missing or malformed file stops the daemon at start.
    curve_authorized_dir : str
        Folder of the authorised clients' public key files (``*.key``), read at start (restart to add a client).
    insecure_control : bool
        Serve a control endpoint reachable from the network WITHOUT CurveZMQ (anyone who can connect may swap
        the head); default false. A warning says so at every start.
    """

    bundle: str = ""
    input: str = "tcp://127.0.0.1:5555"
    ack_input: str = ""
    output: str = "tcp://127.0.0.1:5556"
    precision: str = "auto"
    backend: str = "onnxruntime"
    threads: int = 1
    max_batch: int = 64
    top_k: int = 3
    status_interval_s: float = 2.0
    store: str = ""
    catchup: str = ""
    store_options: dict[str, Any] = field(default_factory=dict)
    serial: str = ""
    serial_baudrate: int = 921600
    control: str = ""
    head: str = ""
    heads_dir: str = ""
    novelty: bool = True
    novelty_detector: str = "auto"
    drift: dict[str, Any] = field(default_factory=dict)
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    allow_cpu_fallback: bool = False
    drain_timeout_s: float = 5.0
    output_hwm: int = 100000
    curve: list[str] = field(default_factory=list)
    curve_secret_key: str = ""
    curve_authorized_dir: str = ""
    insecure_control: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DaemonConfig:
        """Settings from a ``[daemon]`` table (unknown keys, wrong types and out-of-range values: ConfigError)."""
        known = set(cls.__dataclass_fields__) - {"extra"}
        if "journal" in d:
            raise ConfigError("daemon setting 'journal' was replaced by 'store' (a SQLite store with replay: "
                              "docs/store.md); the journal file format is gone")
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown daemon setting(s): {sorted(unknown)}; known: {sorted(known)}")
        check_field_types(cls, d, "daemon")  # issue 18: max_batch = "lots" is a ConfigError, not a TypeError
        cfg = cls(**d)
        if cfg.max_batch < 1 or cfg.top_k < 1 or cfg.threads < 1:
            raise ConfigError("max_batch, top_k and threads must be ≥ 1")
        if cfg.precision not in ("auto", "int8", "fp32") or cfg.status_interval_s <= 0 or cfg.serial_baudrate < 1:
            raise ConfigError("precision must be auto, int8 or fp32; status_interval_s and serial_baudrate > 0 "
                              f"(got {cfg.precision!r}, {cfg.status_interval_s!r}, {cfg.serial_baudrate!r})")
        if not cfg.drain_timeout_s > 0:
            raise ConfigError(f"drain_timeout_s must be > 0, got {cfg.drain_timeout_s!r}")
        if cfg.output_hwm < 1:
            raise ConfigError(f"output_hwm must be ≥ 1, got {cfg.output_hwm!r}")
        cfg.store_config()  # unknown or out-of-range store options: ConfigError now, not at start
        cfg.check_needs_store()
        if cfg.novelty_detector not in NOVELTY_DETECTORS:
            raise ConfigError(f"novelty_detector must be one of {NOVELTY_DETECTORS}, got {cfg.novelty_detector!r}")
        curve_sockets(cfg.curve, cfg.control, cfg.insecure_control)  # unknown socket names: ConfigError
        return cfg

    def check_needs_store(self) -> None:
        """Refuse the settings that only work with a store: ``ack_input`` (an ack promises the spectrum is stored)
        and ``catchup`` (served from the stored results).

        Raises
        ------
        ConfigError
            ``ack_input`` or ``catchup`` is set and ``store`` is not.
        """
        if self.store:
            return
        if self.ack_input:
            raise ConfigError(f"ack_input ({self.ack_input}) needs a store (daemon setting 'store', --store): "
                              "an acknowledgement promises the spectrum is stored")
        if self.catchup:
            raise ConfigError(f"catchup = {self.catchup!r} needs a store (daemon setting 'store'): catch-up is "
                              "served from the stored results")

    def store_config(self) -> StoreConfig | None:
        """The store's settings (None without a store).

        Raises
        ------
        ConfigError
            Unknown, mistyped or out-of-range ``store_options``.
        """
        if not self.store:
            if self.store_options:
                raise ConfigError("store_options are set but no store file is (daemon setting 'store')")
            return None
        check_field_types(StoreConfig, self.store_options, "daemon.store_options")
        unknown = set(self.store_options) - set(StoreConfig.__dataclass_fields__) | ({"path"} & set(self.store_options))
        if unknown:
            raise ConfigError(f"unknown store option(s): {sorted(unknown)}; known: "
                              f"{sorted(set(StoreConfig.__dataclass_fields__) - {'path'})}")
        return StoreConfig(path=self.store, **self.store_options)


def _providers(backend: object) -> list[str]:
    """Execution providers the backend runs on (the session's, once loaded), for the status message."""
    return list(getattr(backend, "active_providers", None) or getattr(backend, "providers", None) or [])


Socket = zmq.Socket[bytes]


class Publisher(Protocol):
    """Where a micro-batch's answers go: the output socket, or a capture in the evaluation commands."""

    def send_multipart(self, msg_parts: Sequence[bytes], /) -> Any:
        """Send ``[topic, payload]``."""


#: Smallest micro-batch whose quality gate and drift bookkeeping run on the drift thread, beside the loop thread.
#: A smaller batch (the steady, low-rate case: one spectrum a batch) runs them in turn on the loop thread: handing
#: them over costs more than it saves there, and a Python thread holding the GIL can delay the loop thread's
#: publication by up to the interpreter's switch interval (5 ms). Outputs are the same either way.
THREADED_MIN_BATCH = 8


def _run_now(fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` on this thread; its outcome (result or exception) as a finished future."""
    future: Future[T] = Future()
    try:
        future.set_result(fn())
    except Exception as exc:
        future.set_exception(exc)
    return future


def _arrival(inp: _Input, spectrum: SpectrumIn | None, error: Exception | None, received_ns: int) -> Arrival:
    """The store's record of one input message (a rejected one with the identity it carried)."""
    if spectrum is not None:
        return Arrival(_joined(inp.frame), inp.source, received_ns, spectrum.id, spectrum.instrument_id)
    sid, iid, _ = _identity(cast("Exception", error))
    return Arrival(_joined(inp.frame), inp.source, received_ns, sid, iid, accepted=False)


def _joined(frame: bytes | list[bytes]) -> bytes:
    """A message as one byte string (a multipart message, refused, is stored with its frames joined)."""
    return frame if isinstance(frame, bytes) else b"".join(frame)


def _identity(exc: Exception) -> tuple[str | None, str | None, int | None]:
    """The ``id``, ``instrument_id`` and ``instrument_seq`` a refused message carried (None where unreadable)."""
    ident = exc.identity if isinstance(exc, WireError) else {}
    sid, iid, seq = ident.get("id"), ident.get("instrument_id"), ident.get("instrument_seq")
    return (sid if isinstance(sid, str) else None, iid if isinstance(iid, str) else None,
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None)


@dataclass
class _Input:
    """One input message of a micro-batch: ``frame`` (a multipart message: its frames), ``source`` (``push``,
    ``ack``, ``serial``), and once stored its ``row`` or the earlier row it ``duplicate_of``.
    """

    frame: bytes | list[bytes]
    source: str
    received_ns: int = 0
    row: int | None = None
    duplicate_of: int | None = None
    peer: list[bytes] | None = None  # acknowledged input: the envelope its ack goes to (edge.ack_input)
    first_copy: _Input | None = None  # a resend within its own micro-batch: that batch's first copy
    arrival: int | None = None  # its index among the micro-batch's new input messages (stored with their results)


@dataclass
class _Message:
    """One message to store and publish: ``topic``, ``payload`` (a map), prediction ``seq``, the spectrum it
    answers (its ``spectrum_row`` when stored before, else its ``arrival``), retention ``priority``
    (:data:`edge.store.PRIORITY`).
    """

    topic: str
    payload: dict[str, Any]
    seq: int | None = None
    spectrum_row: int | None = None
    priority: int = 0
    arrival: int | None = None  # the new input message it answers, stored in the same transaction


DOUBTFUL_PROBABILITY = 0.5
"""A prediction whose top-1 probability is below this is stored (and sent down) as doubtful."""


def _priority(prediction: Mapping[str, Any]) -> int:
    """Retention and downlink priority of a prediction: novel, then doubtful (quality not ok, labels not
    trusted, top-1 probability < :data:`DOUBTFUL_PROBABILITY`), then nominal.
    """
    if prediction.get("novel"):
        return PRIORITY["novel"]
    probs = prediction.get("probabilities") or [0.0]
    if not prediction.get("labels_trusted", True) or probs[0] < DOUBTFUL_PROBABILITY:
        return PRIORITY["doubtful"]
    return PRIORITY["nominal"]


class Daemon:
    """Classify spectra arriving over ZeroMQ (and internal inputs) and publish predictions.

    Parameters
    ----------
    config : DaemonConfig
    context : zmq.Context, optional
        Shared context (inputs in other threads connect to :data:`INTERNAL_INPUT` on it).
    instrument : InstrumentConfig, optional
        The ``[instrument]`` table: calibration file, laser wavelength, quality gate (:mod:`edge.hygiene`).

    Raises
    ------
    BundleError, BackendError, ConfigError, CalibrationError
        At construction, when the bundle, model or instrument calibration cannot be used.
    """

    def __init__(self, config: DaemonConfig, context: zmq.Context[Any] | None = None,
                 expect_grid: RamanGrid | None = None, instrument: InstrumentConfig | None = None) -> None:
        self.config = config
        config.check_needs_store()  # ack_input or catchup without a store: refused before anything loads
        self.bundle = Bundle.load(config.bundle, expect_grid=expect_grid)
        self.labels = np.asarray(self.bundle.labels)
        if config.top_k > len(self.labels):
            raise ConfigError(f"top_k = {config.top_k} exceeds the bundle's {len(self.labels)} classes")
        self.preprocessor = Preprocessor(self.bundle.preprocessing)
        # Spectra of the calibration standard (label = the drift monitor's reference_label) are measured, not
        # classified: the bundle's minimum range coverage does not refuse them.
        # spectra of the reference standard (silicon) are read by the drift monitor over their own narrow range
        reference_label = DriftConfig.from_dict(config.drift).reference_label.strip().lower()
        self._standard = ((reference_label, Preprocessor(dataclasses.replace(self.bundle.preprocessing, min_coverage=0.0)))
                          if reference_label else None)
        self.grid = self.bundle.grid
        # -- instrument hygiene (edge.hygiene): calibration file loaded (or refused) at start --
        self.hygiene = Hygiene(instrument, self.grid)
        # -- end instrument hygiene --
        model_path, self.precision = self.bundle.onnx_model(config.precision)
        self.model_sha256 = self.bundle.manifest["files"][model_path.name]["sha256"]
        ep = {"providers": config.providers, "allow_cpu_fallback": config.allow_cpu_fallback} \
            if config.backend == "onnxruntime" else {}
        self.backend = create_backend(config.backend, model_path, intra_op_threads=config.threads,
                                      precision=self.precision, **ep)
        self.ctx = context or zmq.Context.instance()
        # CurveZMQ (edge.security): key files read now (ConfigError at start); sockets secured by role before bind
        self.security = CurveServer(curve_sockets(config.curve, config.control, config.insecure_control),
                                    config.curve_secret_key, config.curve_authorized_dir, self.ctx)
        if config.insecure_control and config.control:
            log.warning("control endpoint %s served WITHOUT CurveZMQ (insecure_control): anyone who can connect may "
                        "swap the head", config.control)
        self.stop_event = threading.Event()
        self._stop_at = 0.0  # time.monotonic() of the stop request: the drain deadline counts from it
        self.ready = threading.Event()
        self.replay_done = threading.Event()  # set once the stored spectra without a result are answered (serial custody)
        self.counters = {"received": 0, "published": 0, "rejected": 0, "batches": 0, "subscriptions": 0,
                         "lost": 0, "drift_errors": 0, "dropped_hwm": 0, "replayed": 0,
                         "duplicates": 0}
        # lost: spectra the serial link reported lost (error topic, reason "lost"); drift_errors: batches whose
        # drift bookkeeping failed after their predictions were published (logged); dropped_hwm: messages a
        # subscriber's full queue refused (edge.output; a lower bound, docs/wire.md §7), by topic in the status
        self._output: CountingPublisher | None = None
        self.rejections: dict[str, int] = {}
        self.seq = 0
        self._status_hooks: list[Callable[[], dict[str, Any]]] = []
        # Onboard head swaps (edge.heads): every prediction names the head version that made it.
        heads_dir = config.heads_dir or config.bundle
        if not Path(heads_dir).is_dir():
            raise ConfigError(f"heads_dir {heads_dir!r} is not a folder")
        self.heads = HeadSwitch(self.bundle.manifest, model_path.name, heads_dir)
        if config.head:
            self.heads.activate(load_head(config.head))  # HeadError: refused at start like a bad bundle
        self.labels = self.heads.labels
        self._control = None
        self.add_status_hook(self.heads.status)
        self.add_status_hook(self.hygiene.status)
        # Novelty and drift (edge.novelty): the deciding detector runs on the same micro-batch as the classifier,
        # before publishing; the autoencoder, when it does not decide, right after (for the drift monitor).
        self.novelty = NoveltyService.from_bundle(self.bundle, config.drift, self.precision, config.threads,
                                                  config.novelty_detector) if config.novelty else None
        if self.novelty is not None:
            self.add_status_hook(self.novelty.status)
        elif DriftConfig.from_dict(config.drift).compensate_offset:
            if "compensate_offset" in config.drift:  # asked for explicitly: refuse rather than run uncorrected
                raise ConfigError("drift compensate_offset needs novelty on and a bundle trained with --novelty "
                                  "(its class-mean reference spectra measure the offset)")
            # On by default (issue #14), but this bundle has no reference spectra: say so once, loudly.
            log.warning("drift compensation (on by default) is OFF: %s", "novelty is off" if not config.novelty
                        else "the bundle has no novelty section (retrain with edge-train --novelty)")
        self._acks: AckInput | None = None  # the acknowledged input, bound in _open_sockets
        self._drift_executor: ThreadPoolExecutor | None = None  # the drift thread (_drift_thread)
        self._drift_job: tuple[Future[list[dict[str, Any]]], int] | None = None  # (its future, spectra)
        store_config = config.store_config()
        self._store = Store(store_config) if store_config is not None else None  # StoreError: refused at start
        # -- catch-up (edge.catchup): its own thread, socket and read connection; started in run() --
        self._catchup = CatchUpServer(config.catchup, config.store, self.ctx,
                                      secure=lambda sock: self.security.secure(sock, "output")) \
            if config.catchup else None
        if self._catchup is not None:
            self.add_status_hook(self._catchup.status)
        # -- end catch-up --
        if self._store is not None:
            self.seq = self._store.last_seq  # never reused across restarts
            self.add_status_hook(self._store.status)  # a failed write raises its alarm there
        self._started_ns = time.time_ns()
        self.endpoints: dict[str, str] = {}

    # -- public -------------------------------------------------------------------------------------------
    def add_status_hook(self, hook: Callable[[], dict[str, Any]]) -> None:
        """Merge ``hook()`` into every status message (e.g. serial link state)."""
        self._status_hooks.append(hook)

    def stop(self, requested_at: float | None = None) -> None:
        """Ask the loop to drain and return within ``drain_timeout_s`` (thread-safe; callable from a signal
        handler).

        Parameters
        ----------
        requested_at : float, optional
            :func:`time.monotonic` of the stop request the deadline counts from (e.g. the signal's arrival,
            before the serial input was stopped); default: now.
        """
        if not self.stop_event.is_set():
            self._stop_at = time.monotonic() if requested_at is None else requested_at
        self.stop_event.set()

    def run(self) -> dict[str, int]:
        """Serve until :meth:`stop`; returns the counters. Sockets are bound here and closed on return."""
        with self.backend:
            self.backend.warmup(self.bundle.preprocessing.sample_shape, (1, min(8, self.config.max_batch)))
            try:  # preprocess once now: lazy imports (scipy, ~2 s) happen here, not on the first spectrum
                self.preprocessor(np.abs(np.sin(np.arange(self.grid.n_points) / 7.0)).astype(np.float32) + 0.1)
            except EdgeError as exc:
                log.debug("preprocessing warm-up failed: %s", exc)
            if self.novelty is not None:
                self.novelty.load((1, self.grid.n_points))
            sockets = self._open_sockets()
            try:
                if self._catchup is not None:  # ConfigError when it cannot bind: refused at start
                    self.endpoints["catchup"] = self._catchup.start()
                self.ready.set()
                self._loop(*sockets)
            finally:
                if not self.stop_event.is_set():  # the loop failed: no drain deadline was set
                    self._stop_at = time.monotonic()
                for s in sockets:
                    if s is not None:
                        s.close(linger=self._output_linger_ms() if s is sockets[1] else 0)
                if self._control is not None:
                    self._control.close(linger=0)
                    self._control = None
                if self._acks is not None:
                    self._acks.close()
                    self._acks = None
                if self._catchup is not None:  # before the store closes; within what is left of the deadline
                    self._catchup.stop(timeout_s=min(1.0, max(0.1, self._output_linger_ms() / 1000)))
                self.security.close()  # after its sockets: the context's authenticator stops with its last user
                if self._store is not None:
                    self._store.close()
                if self._drift_executor is not None:  # the drain's final status joined the last job
                    self._drift_executor.shutdown(wait=True)
                    self._drift_executor = None
                if self.novelty is not None:
                    self.novelty.close()
        log.info("stopped: %s", self.counters)
        return dict(self.counters)

    # -- internals ----------------------------------------------------------------------------------------
    def _open_sockets(self) -> tuple[Socket | None, Socket, Socket]:
        pub = self.ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.setsockopt(zmq.SNDHWM, self.config.output_hwm)
        apply_limits(pub, "output")  # it reads subscriptions only (edge.socket_limits, docs/wire.md §1.1)
        internal = self.ctx.socket(zmq.PULL)
        apply_limits(internal, "internal")  # inproc: sizes are checked by the decoder (edge.wire)
        pull = None
        try:
            self.security.secure(pub, "output")
            pub.bind(self.config.output)
            self.endpoints["output"] = pub.getsockopt_string(zmq.LAST_ENDPOINT)
            internal.bind(INTERNAL_INPUT)
            if self.config.input:
                pull = self.ctx.socket(zmq.PULL)
                apply_limits(pull, "input")  # larger messages dropped by ZeroMQ; queue ≤ 32 MiB (docs/wire.md §1.1)
                self.security.secure(pull, "input")
                pull.bind(self.config.input)
                self.endpoints["input"] = pull.getsockopt_string(zmq.LAST_ENDPOINT)
            if self.config.ack_input:  # edge.ack_input: ROUTER, MAXMSGSIZE, CurveZMQ as the input; closes itself on failure
                self._acks = AckInput(self.ctx, self.config.ack_input, lambda s: self.security.secure(s, "input"))
                self.endpoints["ack_input"] = self._acks.endpoint
                self.add_status_hook(self._acks.status)
        except (zmq.ZMQError, ConfigError) as exc:
            for s in (pub, internal, pull):
                if s is not None:
                    s.close(linger=0)
            self.security.close()
            if isinstance(exc, ConfigError):  # the CurveZMQ authenticator could not start
                raise
            raise ConfigError(f"cannot bind ZeroMQ endpoint ({self.config.input} / {self.config.output} / ack_input "
                              f"{self.config.ack_input or '-'}): {exc}") from exc
        log.info("serving %s (%s, %s) on in=%s out=%s", self.bundle.model_id, self.precision, self.config.backend,
                 self.endpoints.get("input", "-"), self.endpoints["output"])
        return pull, pub, internal

    def _loop(self, pull: Socket | None, sock: Socket, internal: Socket) -> None:
        pub = self._output = CountingPublisher(sock)  # all publishing goes through it: never blocks, counts drops
        poller = zmq.Poller()
        public = [pull] if pull is not None else []  # events are accepted only on the internal input
        inputs = [*public, internal]
        for s in [*inputs, sock]:
            poller.register(s, zmq.POLLIN)
        if self._acks is not None:
            poller.register(self._acks.sock, zmq.POLLIN)
        control = self._open_control(poller)
        self._replay(pub)  # what a kill left without a result, before any new input
        self.replay_done.set()
        next_status = time.monotonic() + self.config.status_interval_s
        while not self.stop_event.is_set():
            events = dict(poller.poll(timeout=0 if self._drift_job is not None else 100))
            if not events and self._drift_job is not None:
                self.join_drift(pub)  # no input waiting: the last batch's drift alarms go out now
                continue
            if sock in events:
                self._handle_subscriptions(sock, pub)
            frames, acked, internal_frames = self._take(public, internal, events)
            if frames or internal_frames or acked:
                self._process(frames, pub, internal_frames, acked)
            if control is not None and control in events:
                self._handle_control(control, pub)  # between micro-batches: no batch sees two heads
            if time.monotonic() >= next_status:
                self._publish_status(pub)
                next_status = time.monotonic() + self.config.status_interval_s
        self._drain_on_stop(public, internal, pub)

    def _drain_on_stop(self, public: list[Socket], internal: Socket, pub: Publisher) -> None:
        """Stop taking input, answer what is already queued, publish the final status, all before the deadline.

        The public input is unbound first (its peers are disconnected; no new spectrum comes in, however fast a
        sender sends); then the queued messages are answered micro-batch by micro-batch until none is left or
        :meth:`_input_deadline` passes (a warning says so: what was still queued is not answered).
        """
        for s in public:
            try:
                s.unbind(self.endpoints["input"])
            except zmq.ZMQError as exc:  # e.g. already gone: then it takes nothing anyway
                log.debug("unbinding the input failed: %s", exc)
        if self._acks is not None:
            self._acks.unbind()
        deadline = self._input_deadline()
        ready: dict[Any, int] = {s: zmq.POLLIN for s in [*public, internal]}
        if self._acks is not None:
            ready[self._acks.sock] = zmq.POLLIN
        while time.monotonic() < deadline:
            frames, acked, internal_frames = self._take(public, internal, ready)
            if not frames and not internal_frames and not acked:
                break
            self._process(frames, pub, internal_frames, acked)
        else:
            log.warning("drain deadline (drain_timeout_s = %s) reached: input still queued is not answered",
                        self.config.drain_timeout_s)
        self._publish_status(pub, final=True)

    def _input_deadline(self) -> float:
        """Monotonic time after which the stop drain takes no more input: ``drain_timeout_s`` after
        :meth:`stop`, less a reserve (a fifth, at most 1 s) for the final status and the output's linger.
        """
        timeout = self.config.drain_timeout_s
        return self._stop_at + timeout - min(1.0, timeout / 5)

    def _output_linger_ms(self) -> int:
        """The output socket's linger on exit: what is left of ``drain_timeout_s`` (0 when it is spent)."""
        return max(0, int((self._stop_at + self.config.drain_timeout_s - time.monotonic()) * 1000))

    def _take(self, public: list[Socket], internal: Socket, events: Mapping[Any, int]
              ) -> tuple[list[bytes | list[bytes]], list[Received], list[bytes | list[bytes]]]:
        """One micro-batch of waiting input, at most ``max_batch`` messages: the public input's first, then the
        acknowledged input's, then the internal input's.
        """
        limit = self.config.max_batch
        frames = self._drain(public, events, limit)
        acked = self._drain_acks(events, limit - len(frames))
        return frames, acked, self._drain([internal], events, limit - len(frames) - len(acked))

    def _drain_acks(self, events: Mapping[Any, int], limit: int) -> list[Received]:
        """Up to ``limit`` waiting messages of the acknowledged input (none without it)."""
        if self._acks is None or self._acks.sock not in events or limit <= 0:
            return []
        return self._acks.drain(limit)

    @staticmethod
    def _drain(inputs: list[Socket], events: Mapping[Any, int], limit: int) -> list[bytes | list[bytes]]:
        """Receive up to ``limit`` waiting input messages, and no more once they hold :data:`BATCH_BYTES`.

        Each is one frame (bytes), or a multipart message (a list of its frames), which :meth:`_process`
        refuses as one rejection. The byte budget bounds the memory a micro-batch of the largest spectra takes
        to preprocess (edge.socket_limits; ordinary spectra never reach it).
        """
        frames: list[bytes | list[bytes]] = []
        nbytes = 0
        for s in inputs:
            if s not in events:
                continue
            got, n = receive_batch(s, limit - len(frames), BATCH_BYTES - nbytes, REFILL_WAIT_MS)
            nbytes += n
            frames += [parts[0] if len(parts) == 1 else parts for parts in got]
        return frames

    def _handle_subscriptions(self, sock: Socket, pub: Publisher) -> None:
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.counters["subscriptions"] += 1
                log.debug("new subscription %r", msg[1:])
                self._publish_status(pub)  # tells the new subscriber it is live

    def _open_control(self, poller: zmq.Poller) -> Socket | None:
        if not self.config.control:
            return None
        sock = self.ctx.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        apply_limits(sock, "control")  # an inline head and its request map; two requests queued per peer
        try:
            self.security.secure(sock, "control")
            sock.bind(self.config.control)
        except (zmq.ZMQError, ConfigError) as exc:
            sock.close(linger=0)
            if isinstance(exc, ConfigError):  # the CurveZMQ authenticator could not start
                raise
            raise ConfigError(f"cannot bind the control endpoint {self.config.control}: {exc}") from exc
        self._control = sock
        self.endpoints["control"] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        poller.register(sock, zmq.POLLIN)
        return sock

    def _handle_control(self, control: Socket, pub: Publisher) -> None:
        """Answer the waiting control requests (REP: one reply each). A new head serves from the next batch."""
        self.join_drift(pub)  # no request sees (or swaps a head under) a batch's running drift bookkeeping
        while True:
            try:
                frame = control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = self.heads.handle(frame, self.status(), last_seq=self.seq)
            except Exception as exc:  # REP must answer every request, and the loop must live on
                log.exception("control request failed")
                reply = {"ok": False, "reason": "internal", "error": f"{type(exc).__name__}: {exc}"}
            if reply.get("ok") and "head_version" in reply:
                self.labels = self.heads.labels
                self._publish_status(pub)  # subscribers learn the new head version at once
            control.send(encode_payload(reply))

    # -- answering a micro-batch: classify → store it with its results (one transaction) → ack → publish ------
    def _rejection(self, reason: str, detail: str, spectrum_id: str | None, received_ns: int,
                   instrument_id: str | None = None, instrument_seq: int | None = None,
                   answers: _Input | None = None) -> _Message:
        """Count one refused input and make its ``error`` message."""
        self.counters["rejected"] += 1
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        log.warning("rejected spectrum %s: %s: %s", spectrum_id or "?", reason, detail)
        payload = {"type": "error", "v": WIRE_VERSION, "reason": reason, "detail": detail, "id": spectrum_id,
                   "instrument_id": instrument_id, "instrument_seq": instrument_seq,
                   "received_ns": received_ns, "rejected_total": self.counters["rejected"]}
        return _Message("error", payload, priority=PRIORITY["rejected"],
                        spectrum_row=answers.row if answers is not None else None,
                        arrival=answers.arrival if answers is not None else None)

    def _emit(self, pub: Publisher, messages: Sequence[_Message], answered: Sequence[tuple[int, int]] = (),
              arrivals: Sequence[Arrival] = (), join_drift: bool = True) -> list[Admission] | None:
        """Store ``messages`` with the new input messages they answer (``arrivals``) and mark the ``answered``
        spectrum rows, in one transaction; then publish the messages in order.

        Without a store, or when it cannot write (alarm raised, counted ``not_stored``), they are published all the
        same. First the pending drift bookkeeping is joined and its alarms published (unless ``join_drift`` is
        False: a batch's own predictions, whose bookkeeping was just submitted). Returns the arrivals' admissions
        (None without a store or when it could not write).
        """
        if not messages and not answered and not arrivals:
            return None
        if join_drift:  # a batch's drift alarms are published right after its predictions, before anything else
            self.join_drift(pub)
        encoded = [(TOPICS[m.topic], encode_payload(m.payload)) for m in messages]
        admissions = None
        if self._store is not None:
            now = time.time_ns()
            admissions = self._store.write_batch(
                arrivals, [StoredResult(m.topic, data, now, m.seq, m.spectrum_row, m.priority, m.arrival)
                           for m, (_, data) in zip(messages, encoded, strict=True)], answered)
        for topic, data in encoded:
            pub.send_multipart([topic, data])
        return admissions

    def _process(self, frames: list[bytes | list[bytes]], pub: Publisher,
                 internal_frames: Sequence[bytes | list[bytes]] = (), acked: Sequence[Received] = ()) -> None:
        """Answer one micro-batch: ``frames`` from the public input, ``acked`` from the acknowledged input,
        ``internal_frames`` from the internal one.

        Only the internal input (the serial input's thread) may carry link/lost events; on the public input an
        event is one ``wire`` rejection (docs/wire.md §5).
        """
        inputs = [_Input(f, "push") for f in self._refuse_events(frames, pub)]
        inputs += [_Input(r.frame, "ack", peer=r.envelope) for r in acked]  # an event there fails decoding: rejected
        stored, internal_frames = _stored_inputs(internal_frames)  # serial custody: stored before its ACK
        inputs += [_Input(f, "serial") for f in self._publish_events(list(internal_frames), pub)] + stored
        if inputs:
            self._answer(inputs, pub, time.time_ns())
        if self._store is not None:
            self._store.maybe_apply_retention()

    def _answer(self, inputs: list[_Input], pub: Publisher, received_ns: int, replayed: bool = False) -> None:
        """Decode, recognise resends, classify, then store the new input messages with every result in one
        transaction, acknowledge, publish (``replayed``: stored before, only their results are stored).

        A spectrum the store already holds under the same ``instrument_id`` and ``id`` (or that came twice in this
        micro-batch) is not classified again: it is answered with a ``duplicate`` error (its first answer stands).
        """
        self.counters["replayed" if replayed else "received"] += len(inputs)
        decoded: list[tuple[_Input, SpectrumIn | None, Exception | None]] = []
        for inp in inputs:
            try:
                if not isinstance(inp.frame, bytes):
                    raise WireError(f"a multipart message of {len(inp.frame)} frames; send each spectrum as one frame",
                                    peek_identity(inp.frame[0]))
                got = decode_spectrum(inp.frame)
                if inp.peer is not None:
                    require_id(inp.frame)  # acknowledged input: a resend is recognised by its id
                decoded.append((inp, got, None))
            except Exception as exc:  # every foreign exception too: a bad message is never fatal
                # kept without traceback or chain: the traceback holds this frame, whose `decoded` holds the
                # exception: a cycle that kept every batch's frames alive until the cyclic GC ran (+50-60 MB of
                # peak RSS under edge-bench malformed)
                exc.__traceback__ = exc.__cause__ = exc.__context__ = None
                decoded.append((inp, None, exc))
        arrivals, unstored = self._store_inputs(decoded, received_ns) if self._store is not None and not replayed \
            else ([], False)
        messages: list[_Message] = []
        answered: list[tuple[int, int]] = []
        accepted: list[SpectrumIn] = []
        answers: dict[int, _Input] = {}  # id(spectrum) -> its input
        acks: list[tuple[_Input, SpectrumIn | None, Exception | None]] = []
        for inp, spectrum, error in decoded:
            resend = inp.duplicate_of is not None or inp.first_copy is not None
            if inp.peer is not None:
                acks.append((inp, spectrum, error))
                if spectrum is not None and (resend or (unstored and inp.row is None)):
                    # acknowledged `duplicate` (a resend: counted, its first answer stands) or `not_stored` (the
                    # store cannot write; the sender resends it): neither classified nor published (docs/store.md)
                    self.counters["duplicates"] += resend
                    continue
            if resend:
                sid, iid, iseq = (spectrum.id, spectrum.instrument_id, spectrum.instrument_seq) if spectrum \
                    else (None, None, None)
                self.counters["duplicates"] += 1
                where = f"stored row {inp.duplicate_of}" if inp.duplicate_of is not None else "in this micro-batch"
                messages.append(self._rejection("duplicate", f"already received ({where}); it is answered once", sid,
                                                received_ns, iid, iseq))
                continue
            if spectrum is None:
                err = cast("Exception", error)
                sid, iid, iseq = _identity(err)
                messages.append(self._rejection(rejection_reason(err), rejection_detail(err), sid,
                                                inp.received_ns or received_ns, iid, iseq, inp))
                if inp.row is not None:
                    answered.append((inp.row, PRIORITY["rejected"]))
            else:
                accepted.append(spectrum)
                answers[id(spectrum)] = inp
        # calibrate → preprocess → infer → novelty → quality → result fields: the one path edge-predict shares. The
        # offset correction is read once the batch is resampled: until then the previous batch's drift bookkeeping
        # may still run on the drift thread (_drift_correction); the quality gate runs there meanwhile.
        res, observe = self._classify(accepted, pub)
        if res is not None:  # (res holds the inputs' own objects: a calibrated spectrum is a copy, BatchOutcome.inputs)
            for s, reason, detail in res.rejected:
                inp = answers[id(s)]
                messages.append(self._rejection(reason, detail, s.id, received_ns, s.instrument_id, s.instrument_seq,
                                                inp))
                if inp.row is not None:
                    answered.append((inp.row, PRIORITY["rejected"]))
            messages += self._predictions(res.accepted, [answers[id(s)] for s in res.inputs], res.fields, received_ns,
                                          answered, replayed)
        admissions = self._emit(pub, messages, answered, arrivals, join_drift=False)
        if acks:
            self._acknowledge(acks, admissions)
        if observe is not None:  # a small batch: in line, after publishing (no prediction waits for it)
            self._drift_job = (_run_now(observe), len(cast("BatchOutcome", res).accepted))
            self.join_drift(pub)

    def _classify(self, accepted: list[SpectrumIn], pub: Publisher
                  ) -> tuple[BatchOutcome | None, Callable[[], list[dict[str, Any]]] | None]:
        """Classify a micro-batch's decoded spectra and start its drift bookkeeping.

        calibrate → preprocess → infer → novelty → quality → result fields: the one path edge-predict shares. The
        offset correction is read once the batch is resampled: until then the previous batch's drift bookkeeping
        may still run on the drift thread (:meth:`_drift_correction`); the quality gate runs there meanwhile.

        Returns the outcome, and the batch's drift bookkeeping when it is to run in line after publishing (a batch
        smaller than :data:`THREADED_MIN_BATCH`); a larger batch's is running on the drift thread, joined before
        the next batch reads the offset correction. Either way the previous batch's drift alarms are published
        here, before anything of this batch.
        """
        if not accepted:
            self.join_drift(pub)
            return None, None
        lazy = self._drift_correction()
        pool = self._drift_thread() if len(accepted) >= THREADED_MIN_BATCH else None
        counts = self.hygiene.counts()  # (the drift monitor may still be updated on the drift thread: not read yet)
        res = classify_batch(accepted, self.preprocessor, self.backend, self.heads, self.labels, self.novelty,
                             self.config.top_k, lazy, self.hygiene, self._standard, pool)
        self.join_drift(pub)  # the previous batch's drift alarms, before anything of this batch is published
        if not res.accepted or self.novelty is None:
            return res, None
        correction = lazy() if callable(lazy) else lazy
        seqs = np.arange(self.seq + 1, self.seq + 1 + len(res.accepted))
        observe = partial(self.novelty.observe, seqs, time.time_ns(), res.accepted, cast("np.ndarray", res.x), res.out,
                          correction)
        if self.novelty.offset_warming_up():
            # Start-up: the compensation has no estimate yet, and this batch's own spectra may bring it in (a backlog
            # at start-up is answered in micro-batches of up to max_batch spectra, all of which would otherwise go
            # uncorrected). Its bookkeeping runs now, before its predictions; if it brings the compensation in, the
            # batch is classified again with it. Its alarms are published after its predictions, as always.
            self._drift_job = (_run_now(observe), len(res.accepted))
            if self.novelty.correction_cm1() != correction:
                counted = self.hygiene.counts()
                self.hygiene.restore_counts(counts)  # the batch is counted once, as classified the second time
                again = classify_batch(accepted, self.preprocessor, self.backend, self.heads, self.labels,
                                       self.novelty, self.config.top_k, self.novelty.correction_cm1(), self.hygiene,
                                       self._standard, pool)
                if [id(s) for s in again.inputs] == [id(s) for s in res.inputs]:  # (the seqs observed)
                    res = again
                else:  # (a spectrum refused one way and not the other: the first answers stand, counted as such)
                    self.hygiene.restore_counts(counted)
            return res, None
        if pool is not None:
            # This batch's drift bookkeeping runs on the drift thread (its FFTs, autoencoder and array work release
            # the GIL) while its results are stored and published and the next batch is received, decoded and
            # resampled; the next batch waits for it before it reads the offset correction. The same computation,
            # in the same order, with the same published messages in the same order, as in line
            # (tests/test_drift_thread.py).
            self._drift_job = (pool.submit(observe), len(res.accepted))
            return res, None
        return res, observe

    def _store_inputs(self, decoded: list[tuple[_Input, SpectrumIn | None, Exception | None]], received_ns: int
                      ) -> tuple[list[Arrival], bool]:
        """Recognise resends and list the micro-batch's new input messages (each input gets its ``arrival`` index):
        they are stored with their answers, in the batch's one transaction (:meth:`_emit`).

        While the store recovers from a failed write they are stored first, in a transaction of their own (they then
        have their ``row``, and no arrival), so that an acknowledged spectrum is classified only once it is stored:
        each retry would otherwise classify and publish a micro-batch that is then acknowledged ``not_stored`` and
        classified again when resent.

        Returns the arrivals, and whether the store could not take the new input (its acknowledged spectra are then
        neither classified nor published: ``not_stored``).
        """
        store = cast("Store", self._store)
        self._find_resends(decoded, store)
        new = [(inp, s, e) for inp, s, e in decoded
               if inp.row is None and inp.duplicate_of is None and inp.first_copy is None]
        if not new:
            return [], False
        for inp, _, _ in new:
            inp.received_ns = received_ns
        arrivals = [_arrival(inp, s, e, received_ns) for inp, s, e in new]
        if not store.writable():  # in its retry interval: nothing can be stored now
            unstored = True
        elif store.error is not None:  # recovering: store the input first
            admissions = store.admit(arrivals)
            if store.error is not None:  # failed again (counted not stored): a PUSH spectrum is answered unstored
                return [], True
            for (inp, _, _), adm in zip(new, admissions, strict=True):
                inp.row, inp.duplicate_of = adm.row, adm.duplicate_of  # (a duplicate: stored meanwhile)
            return [], False
        else:
            unstored = False
        kept = [(a, inp) for a, (inp, s, _) in zip(arrivals, new, strict=True)
                if not (unstored and inp.peer is not None and s is not None)]
        for i, (_, inp) in enumerate(kept):
            inp.arrival = i
        return [a for a, _ in kept], unstored

    def _find_resends(self, decoded: list[tuple[_Input, SpectrumIn | None, Exception | None]], store: Store) -> None:
        """Mark each new spectrum the store holds already (``duplicate_of``: its row) or that came earlier in the same
        micro-batch (``first_copy``), by ``instrument_id`` + ``id``: a resend, answered once.
        """
        keys = [dedup_key(s.instrument_id, s.id) if s is not None and inp.row is None else None
                for inp, s, _ in decoded]
        stored = store.lookup([k for k in keys if k is not None]) if any(keys) else {}
        first: dict[str, _Input] = {}
        for (inp, _, _), key in zip(decoded, keys, strict=True):
            if key is None:
                continue
            if key in stored:
                inp.duplicate_of = stored[key][0]
            elif key in first:
                inp.first_copy = first[key]
            else:
                first[key] = inp

    def _acknowledge(self, pending: list[tuple[_Input, SpectrumIn | None, Exception | None]],
                     admissions: list[Admission] | None) -> None:
        """Acknowledge a micro-batch's acknowledged-input messages once its transaction has committed (``stored``,
        ``duplicate``, ``rejected``), or failed (``not_stored``).
        """
        if self._acks is None or self._store is None:
            return
        items = []
        for inp, spectrum, error in pending:
            row = inp.row  # stored before its classification (while the store recovered from a failed write)
            if row is None and admissions is not None and inp.arrival is not None:
                row = admissions[inp.arrival].row
            dup = inp.duplicate_of
            if dup is None and inp.first_copy is not None and admissions is not None \
                    and inp.first_copy.arrival is not None:
                first = admissions[inp.first_copy.arrival]
                dup = first.row if first.row is not None else first.duplicate_of
            if admissions is not None and inp.arrival is not None and admissions[inp.arrival].duplicate_of is not None:
                dup = admissions[inp.arrival].duplicate_of  # stored meanwhile by another writer (the serial input)
            items.append(AckItem(cast("list[bytes]", inp.peer), spectrum, error, row, dup))
        self._acks.acknowledge(items, self._store)

    def _replay(self, pub: Publisher) -> None:
        """Answer every stored spectrum that has no result yet (a crash or kill came between storing it and
        storing its result), oldest first, before any new input; their predictions say ``replayed: true``.
        """
        if self._store is None:
            return
        after = 0
        while not self.stop_event.is_set():
            batch = self._store.pending(self.config.max_batch, after)
            if not batch:
                return
            after = batch[-1].row
            log.info("replaying %d stored spectra without a result (rows %d–%d)", len(batch), batch[0].row, after)
            self._answer([_Input(p.frame, p.source, p.received_ns, p.row) for p in batch], pub, time.time_ns(),
                         replayed=True)

    def _refuse_events(self, frames: list[bytes | list[bytes]], pub: Publisher) -> list[bytes | list[bytes]]:
        """Refuse the events among public-input ``frames`` (one counted ``wire`` rejection each: an input peer
        must not forge link states or lost spectra). Returns the other frames, in order.
        """
        rest: list[bytes | list[bytes]] = []
        refused: list[_Message] = []
        for frame in frames:
            kind = event_type(frame) if isinstance(frame, bytes) else None
            if kind is None or not isinstance(frame, bytes):
                rest.append(frame)
                continue
            ident = peek_identity(frame)
            refused.append(self._rejection(
                "wire", f"a {kind} event is accepted only on the daemon's internal input (the serial input), not on "
                "the public input", ident["id"], time.time_ns(), ident["instrument_id"], ident["instrument_seq"]))
        self._emit(pub, refused)
        return rest

    def _publish_events(self, frames: list[bytes | list[bytes]], pub: Publisher) -> list[bytes | list[bytes]]:
        """Publish the input events among ``frames`` (:func:`edge.wire.encode_event`; sent by
        :mod:`edge.serial_input`): ``link`` on the ``link`` topic, ``lost`` on the ``error`` topic with reason
        ``"lost"`` (counted in ``lost``). A malformed event is rejected like a bad spectrum. Returns the other
        frames, in order.
        """
        rest: list[bytes | list[bytes]] = []
        messages: list[_Message] = []
        for frame in frames:
            try:
                event = decode_event(frame) if isinstance(frame, bytes) else None
            except Exception as exc:  # a malformed event is one answered rejection, never fatal
                sid, iid, seq = _identity(exc)
                messages.append(self._rejection(rejection_reason(exc), rejection_detail(exc), sid, time.time_ns(),
                                                iid, seq))
                continue
            if event is None:
                rest.append(frame)
                continue
            event["received_ns"] = time.time_ns()
            if event["type"] == "lost":
                self.counters["lost"] += 1
                seq, instrument = event["instrument_seq"], event.get("instrument_id")
                log.warning("instrument %s lost spectrum seq=%d: %s", instrument or "?", seq, event["reason"])
                event = {"type": "error", "v": WIRE_VERSION, "reason": "lost", "detail": event["reason"],
                         "id": event.get("id"), "instrument_id": instrument, "instrument_seq": seq,
                         "received_ns": event["received_ns"], "lost_total": self.counters["lost"]}
                messages.append(_Message("error", event, priority=PRIORITY["event"]))
            else:
                messages.append(_Message("link", event, priority=PRIORITY["event"]))
        self._emit(pub, messages)
        return rest

    def _predictions(self, spectra: list[SpectrumIn], inputs: Sequence[_Input], fields: list[dict[str, Any]],
                     received_ns: int, answered: list[tuple[int, int]], replayed: bool) -> list[_Message]:
        """The ``prediction`` messages of a micro-batch, each with the next ``seq`` and the spectrum it answers
        (``inputs``, aligned with ``spectra``); appends each spectrum stored before's ``(row, priority)`` to
        ``answered``.
        """
        self.counters["batches"] += 1
        out = []
        for s, inp, f in zip(spectra, inputs, fields, strict=True):
            self.seq += 1
            payload = {
                "type": "prediction", "v": WIRE_VERSION, "id": s.id, "seq": self.seq,
                "labels": f["labels"], "probabilities": f["probabilities"],
                "model_id": self.bundle.model_id, "model_sha256": self.model_sha256, "precision": self.precision,
                "head_version": self.heads.version,
                "received_ns": received_ns, "sent_ns": s.sent_ns, "batch_size": len(spectra),
                "instrument_id": s.instrument_id, "instrument_seq": s.instrument_seq, "label": s.label,
            }
            # novelty fields, offset_correction_cm1, hygiene fields (edge.batch.result_fields)
            payload.update({k: v for k, v in f.items() if k not in ("labels", "probabilities")})
            if replayed:
                payload["replayed"] = True
            payload["published_ns"] = time.time_ns()
            priority = _priority(payload)
            row, arrival = inp.row, inp.arrival
            if row is not None:
                answered.append((row, priority))
            self.counters["published"] += 1  # counted before sending: a subscriber never sees more than counted
            out.append(_Message("prediction", payload, seq=self.seq, spectrum_row=row, priority=priority,
                                arrival=arrival))
        return out

    # -- drift bookkeeping on its own thread --------------------------------------------------------------------
    def _drift_thread(self) -> ThreadPoolExecutor:
        """The one thread the drift bookkeeping runs on (started on first use)."""
        if self._drift_executor is None:
            self._drift_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raman-edge-drift")
            # a daemon used without run() (the evaluation harness) stops its thread when garbage-collected
            weakref.finalize(self, self._drift_executor.shutdown, wait=False)
        return self._drift_executor

    def _drift_correction(self) -> float | Callable[[], float]:
        """The drift compensation for the next batch, cm⁻¹: a float, or while the previous batch's drift
        bookkeeping still runs, a function that waits for it and then reads it (:class:`edge.preprocess.Preprocessor`
        calls it once the batch is resampled, the first step that needs it).
        """
        novelty, job = self.novelty, self._drift_job
        if novelty is None:
            return 0.0
        if job is None or job[0].done():
            return novelty.correction_cm1()
        future = job[0]

        def correction() -> float:
            wait([future])
            return novelty.correction_cm1()
        return correction

    def _wait_drift(self) -> None:
        """Wait until the pending drift bookkeeping (if any) has finished (its alarms are not published)."""
        job = self._drift_job  # (status() may be called from another thread while the loop clears it)
        if job is not None:
            wait([job[0]])

    def join_drift(self, pub: Publisher) -> None:
        """Wait for the pending drift bookkeeping (:meth:`NoveltyService.observe` of the last micro-batch) and publish
        its alarms on ``pub``; nothing when none is pending.

        The serving loop calls it itself; a caller that feeds micro-batches to the daemon's handler directly (the
        evaluation harness, ``edge-bench batchcpu``) calls it after the last one, before it reads the drift state.
        """
        if self._drift_job is None:
            return
        job, n_spectra = self._drift_job
        self._drift_job = None
        try:
            events = job.result()
        except Exception as exc:  # the predictions are out; only this batch's drift bookkeeping is lost (counted)
            self.counters["drift_errors"] += 1
            log.warning("drift monitor skipped a batch of %d: %s", n_spectra, exc)
            return
        messages = []
        for event in events:
            event["v"] = WIRE_VERSION
            log.warning("drift alarm: %s",
                        {k: event[k] for k in ("kind", "statistic", "threshold", "detected_seq", "change_seq")})
            messages.append(_Message("drift", event, priority=PRIORITY["event"]))
        self._emit(pub, messages)

    def status(self, final: bool = False) -> dict[str, Any]:
        """The status message: model, precision, backend and its execution providers, counters, uptime."""
        self._wait_drift()  # the drift monitor's status is read below: not while the drift thread updates it
        extra: dict[str, Any] = {}
        if self._output is not None:
            self.counters["dropped_hwm"] = self._output.dropped
            extra["output"] = {"hwm": self.config.output_hwm,
                               "dropped_hwm_by_topic": dict(self._output.dropped_by_topic)}
        st = {"type": "status", "v": WIRE_VERSION, "model_id": self.bundle.model_id, "precision": self.precision,
              "backend": self.config.backend, "providers": _providers(self.backend),
              "counters": dict(self.counters), "rejections": dict(self.rejections),
              "uptime_s": (time.time_ns() - self._started_ns) / 1e9, "final": final, "time_ns": time.time_ns(), **extra}
        for hook in self._status_hooks:
            st.update(hook())
        return st

    def _publish_status(self, pub: Publisher, final: bool = False) -> None:
        self.join_drift(pub)  # its alarms first; the status then counts them
        pub.send_multipart([TOPICS["status"], encode_payload(self.status(final))])
