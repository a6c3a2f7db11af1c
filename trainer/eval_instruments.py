"""``edge-eval instruments``: is a bundle right on another spectrometer's spectra (issue #14).

Every row is streamed, one spectrum per message in a seeded random order, through the daemon's own code
path: :class:`edge.daemon.Daemon` with its default settings (or the ones given), its preprocessing (range
coverage, edge extension, drift compensation), inference, novelty decision and drift monitor, with the
ZeroMQ sockets replaced by an in-process capture of what it publishes. A fresh daemon serves each row (and
each instrument of a row), so the drift compensation of one row never leaks into the next.

Rows (``{"rows": {NAME: {"n", "top1", "flagged", ...}}}``):

* ``raw_test``, ``raw_test_shift15``, ``raw_test_shift30``: the 40 % split's test set and its copies shifted
  by +15 / +30 cm⁻¹ (:func:`edge.shift.shift_spectra`);
* ``raw_test_range_end1300``, ``raw_test_range_end1450``, ``raw_test_range_start400``: partial-range copies
  (:func:`edge.shift.truncate_spectra`), sent with their own shorter axis;
* ``rruff2026_raw_in63``, ``rruff2026_processed_in63``: the 2026-format RRUFF files of the minerals the bundle
  knows, read from the original ``.txt`` files (:func:`edge.data.load_rruff_txt`) on their native axes;
* ``rruff2026_novel``: the files of the minerals it does not know (``flagged``: the fraction flagged novel);
* ``charisma_calcite``: calcite from six other lab spectrometers (CHARISMA round robin), each instrument's
  spectra through a daemon of its own (as deployed); ``charisma_calcite_one_stream``: the same 20 spectra
  through one daemon, whose drift monitor then sees six instruments' offsets at once (a stress test).

``top1`` and ``flagged`` are percentages; ``rejected`` counts spectra the daemon refused (e.g. reason
``coverage``), which count as wrong in ``top1``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.data import data_dir, load_npz, load_rruff_txt
from edge.errors import DataError
from edge.io import read_spectrum
from edge.shift import shift_spectra, truncate_spectra
from edge.wire import decode_payload, encode_spectrum

if TYPE_CHECKING:
    from edge.daemon import Daemon

__all__ = ["ROW_NAMES", "MessageCapture", "Row", "build_rows", "evaluate_instruments", "score_row",
           "serving"]

log = logging.getLogger("trainer.eval_instruments")

ROW_NAMES = ("raw_test", "raw_test_shift15", "raw_test_shift30", "raw_test_range_end1300",
             "raw_test_range_end1450", "raw_test_range_start400", "rruff2026_raw_in63",
             "rruff2026_processed_in63", "rruff2026_novel", "charisma_calcite", "charisma_calcite_one_stream")
RRUFF2026 = "cross_instrument/rruff_2026_oriented"
CHARISMA = "cross_instrument/charisma"
RAW_TEST = "rruff_soysal/raw_test.npz"


@dataclass
class Row:
    """Spectra of one evaluation row, each on its own axis.

    Attributes
    ----------
    name : str
    spectra : list of (numpy.ndarray or None, numpy.ndarray)
        (Raman shift, cm⁻¹, shape (M,) float64 — None on the model grid; intensity, shape (M,) float32).
    labels : list of str
        True mineral of each spectrum.
    novel : bool
        The minerals are not among the bundle's classes: the row measures ``flagged`` only.
    instruments : list of str
        Which instrument measured each spectrum: each instrument's spectra are streamed through a daemon of
        their own, as deployed (one daemon per instrument; its drift monitor sees one instrument). Empty: one.
    """

    name: str
    spectra: list[tuple[np.ndarray | None, np.ndarray]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    novel: bool = False
    instruments: list[str] = field(default_factory=list)

    def add(self, axis: np.ndarray | None, intensity: np.ndarray, label: str, instrument: str = "") -> None:
        """Append one spectrum (axis shape (M,) cm⁻¹ or None, intensity shape (M,)) with its label."""
        self.spectra.append((axis, np.asarray(intensity, dtype=np.float32)))
        self.labels.append(label)
        self.instruments.append(instrument)


def build_rows(classes: Sequence[str], root: Path, names: Sequence[str] = ROW_NAMES,
               test_path: str | Path | None = None) -> dict[str, Row]:
    """Build the evaluation rows named ``names`` from the data folder ``root``.

    ``test_path`` replaces ``rruff_soysal/raw_test.npz`` as the source of the ``raw_test*`` rows (a ``.npz``
    split; e.g. a held-out part of a training split when choosing a recipe).

    Raises
    ------
    DataError
        If a file is missing or unreadable.
    """
    known = set(classes)
    rows = {n: Row(n, novel=n == "rruff2026_novel") for n in names}
    if any(n.startswith("raw_test") for n in names):
        test = load_npz(Path(test_path) if test_path else root / RAW_TEST)
        axis = test.raman_shift_cm1
        variants: dict[str, Callable[[], tuple[np.ndarray | None, np.ndarray]]] = {
            "raw_test": lambda: (None, test.intensities),
            "raw_test_shift15": lambda: (None, shift_spectra(test.intensities, 15.0, float(axis[1] - axis[0]))),
            "raw_test_shift30": lambda: (None, shift_spectra(test.intensities, 30.0, float(axis[1] - axis[0]))),
            "raw_test_range_end1300": lambda: truncate_spectra(test.intensities, axis, None, 1300.0),
            "raw_test_range_end1450": lambda: truncate_spectra(test.intensities, axis, None, 1450.0),
            "raw_test_range_start400": lambda: truncate_spectra(test.intensities, axis, 400.0, None),
        }
        for name, make in variants.items():
            if name in rows:
                ax, x = make()
                for i, label in enumerate(test.labels):
                    rows[name].add(ax, x[i], str(label))
    if any(n.startswith("rruff2026") for n in names):
        folder = root / RRUFF2026
        files = sorted(folder.glob("*.txt"))
        if not files:
            raise DataError(f"{folder}: no RRUFF .txt files")
        for f in files:
            s = load_rruff_txt(f)
            kind = str(s.metadata.get("data_kind", "")).lower()
            name = "rruff2026_novel" if s.label not in known else f"rruff2026_{kind}_in63"
            if name in rows:
                rows[name].add(s.raman_shift_cm1, s.intensity, s.label)
    if "charisma_calcite" in rows or "charisma_calcite_one_stream" in rows:
        folder = root / CHARISMA
        try:
            with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
                entries = [r for r in csv.DictReader(fh) if r["label"] == "Calcite"]
        except (OSError, KeyError) as exc:
            raise DataError(f"{folder / 'labels.csv'}: cannot read the labels: {exc}") from exc
        for r in entries:
            ax, y64 = read_spectrum(folder / r["file"])  # BWTek: Raman Shift / Dark Subtracted #1 (edge.io)
            y = y64.astype(np.float32)
            if "charisma_calcite" in rows:  # one daemon per lab instrument, as deployed
                rows["charisma_calcite"].add(ax, y, "Calcite", r["lab_instrument"])
            if "charisma_calcite_one_stream" in rows:  # the six instruments through one daemon (a stress test)
                rows["charisma_calcite_one_stream"].add(ax, y, "Calcite")
    return rows


class MessageCapture:
    """Stands in for the daemon's output socket (:class:`edge.daemon.Publisher`): keeps every published
    ``(topic, payload)`` in order. The evaluation commands run the daemon's own per-message handler with it.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def send_multipart(self, frames: Sequence[bytes], /) -> None:
        """Keep one ``[topic, payload]`` message."""
        self.messages.append((frames[0].decode(), decode_payload(frames[1])))

    def topic(self, name: str) -> list[dict[str, Any]]:
        """The payloads published on topic ``name``, in order."""
        return [m for t, m in self.messages if t == name]


@contextlib.contextmanager
def serving(daemon: Daemon) -> Iterator[Daemon]:
    """Open ``daemon``'s inference backend and novelty models for use without sockets; close them after."""
    with daemon.backend:
        if daemon.novelty is not None:
            daemon.novelty.load()
        try:
            yield daemon
        finally:
            if daemon.novelty is not None:
                daemon.novelty.close()


def score_row(bundle: str | Path, row: Row, seed: int = 0, daemon_settings: dict[str, Any] | None = None,
              details: bool = False) -> dict[str, Any]:
    """Stream one row through a fresh daemon (:class:`edge.daemon.Daemon`, no sockets) and score it.

    Parameters
    ----------
    bundle : path-like
        The model bundle.
    row : Row
    seed : int
        Seeds the streaming order.
    daemon_settings : dict, optional
        ``[daemon]`` settings overriding the daemon's defaults (e.g. ``{"drift": {"compensate_offset": False}}``).
    details : bool
        Also return ``predictions``: per published spectrum (row order) its ``label``, ``predicted``,
        ``novelty_score``, ``novelty_threshold`` and ``offset_correction_cm1``.

    Returns
    -------
    dict
        ``n``, ``top1`` (percent; a rejected spectrum counts as wrong; None for a novel row), ``flagged``
        (percent flagged novel; None without a novelty detector), ``rejected`` (count) and
        ``rejections`` (count by reason), ``final_correction_cm1``.

    Raises
    ------
    BundleError, ConfigError, BackendError
        When the daemon cannot serve the bundle with these settings.
    """
    from edge.daemon import DaemonConfig

    cfg = DaemonConfig.from_dict({"input": "", "output": "", "max_batch": 1, **(daemon_settings or {}),
                                  "bundle": str(bundle)})
    pub = MessageCapture()
    order = np.random.default_rng(seed).permutation(len(row.spectra))
    instruments = row.instruments or [""] * len(row.spectra)
    rejected = 0
    rejections: dict[str, int] = {}
    corrections: dict[str, float] = {}
    for instrument in sorted(set(instruments)):
        daemon = _stream(cfg, row, [i for i in order if instruments[i] == instrument], pub)
        rejected += daemon.counters["rejected"]
        for k, v in daemon.rejections.items():
            rejections[k] = rejections.get(k, 0) + v
        corrections[instrument] = daemon.novelty.correction_cm1() if daemon.novelty is not None else 0.0
    preds = {int(m["id"]): m for m in pub.topic("prediction")}
    n = len(row.spectra)
    correct = sum(1 for i, m in preds.items() if m["labels"][0] == row.labels[i])
    flagged = [bool(m.get("novel")) for m in preds.values() if "novel" in m]
    out: dict[str, Any] = {
        "n": n,
        "top1": None if row.novel else 100.0 * correct / max(n, 1),
        "flagged": 100.0 * sum(flagged) / n if flagged else None,
        "rejected": rejected,
        "rejections": rejections,
        "final_correction_cm1": corrections if row.instruments and any(row.instruments) else corrections[""],
    }
    if details:
        out["predictions"] = [{"label": row.labels[i], "predicted": m["labels"][0],
                               "novelty_score": m.get("novelty_score"),
                               "novelty_threshold": m.get("novelty_threshold"),
                               "offset_correction_cm1": m.get("offset_correction_cm1")}
                              for i, m in sorted(preds.items())]
    return out


def _stream(cfg: Any, row: Row, order: Sequence[int], pub: MessageCapture) -> Any:
    """Stream ``row``'s spectra ``order`` through a fresh daemon in micro-batches of ``cfg.max_batch`` messages
    (1, :func:`score_row`'s default: one message at a time; a recipe's ``max_batch`` = 64 feeds them as a flooded
    daemon drains them); return the daemon.

    The daemon's own per-message handler runs (``Daemon._process``: decode, preprocess, infer, novelty, drift
    monitor, publish); only its sockets are replaced by ``pub``.
    """
    from edge.daemon import Daemon

    order = list(order)
    step = max(1, int(cfg.max_batch))
    with serving(Daemon(cfg)) as daemon:
        for start in range(0, len(order), step):
            frames: list[bytes | list[bytes]] = []
            for i in order[start:start + step]:
                axis, y = row.spectra[i]
                frames.append(encode_spectrum(y, axis, id=str(i)))
            daemon._process(frames, pub)
        daemon.join_drift(pub)  # the last micro-batch's drift bookkeeping (edge.daemon: its own thread)
    return daemon


def evaluate_instruments(bundle: str | Path, data_root: str | Path | None = None, seed: int = 0,
                         names: Sequence[str] = ROW_NAMES, daemon_settings: dict[str, Any] | None = None,
                         extra_rows: Sequence[Callable[[Any, Path], dict[str, Row]]] = (),
                         test_path: str | Path | None = None) -> dict[str, Any]:
    """Score a bundle on every row (see the module docstring).

    Parameters
    ----------
    bundle : path-like
    data_root : path-like, optional
        The shared data folder (:func:`edge.data.data_dir`).
    seed : int
        Streaming order.
    names : sequence of str
        Rows to score (default all).
    daemon_settings : dict, optional
        Daemon settings overriding its defaults.
    extra_rows : sequence of callables
        ``f(bundle, data_root) -> {name: Row}``: further rows (other modules' checks) scored the same way.
    test_path : path-like, optional
        Source of the ``raw_test*`` rows instead of ``raw_test.npz`` (:func:`build_rows`).

    Returns
    -------
    dict
        ``{"bundle", "seed", "daemon_settings", "rows": {name: score_row(...)}}``.

    Raises
    ------
    DataError, BundleError, ConfigError
    """
    from edge.bundle import Bundle

    root = data_dir(data_root)
    b = Bundle.load(bundle)
    rows = build_rows(b.labels, root, names, test_path)
    for f in extra_rows:
        rows.update(f(b, root))
    result: dict[str, Any] = {"bundle": str(bundle), "model_id": b.model_id, "seed": seed,
                              "daemon_settings": daemon_settings or {}, "rows": {}}
    for name, row in rows.items():
        result["rows"][name] = score_row(bundle, row, seed, daemon_settings)
        log.info("%s: %s", name, result["rows"][name])
    return result


def write_plot(result: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of each row's top-1 and flagged rate (PNG); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no plot: matplotlib is not installed (pip install 'raman-edge[reports]')")
        return None
    names = [n for n, r in result["rows"].items() if "top1" in r or "flagged" in r]
    top1 = [result["rows"][n].get("top1") or 0.0 for n in names]
    flagged = [result["rows"][n].get("flagged") or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    pos = np.arange(len(names))
    ax.bar(pos - 0.2, top1, 0.4, label="top-1 %")
    ax.bar(pos + 0.2, flagged, 0.4, label="flagged novel %")
    ax.set_xticks(pos, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title(f"edge-eval instruments: {result.get('model_id', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def add_parser(sub: Any) -> None:
    """Register ``instruments`` on ``edge-eval``'s subcommands."""
    from edge.cli_common import add_data_args, add_logging_args

    p = sub.add_parser("instruments", help="score a bundle on other instruments' spectra through the daemon's path "
                                           "(trainer/eval_instruments.py)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--json", required=True, help="output JSON ({'rows': {name: {'n', 'top1', 'flagged', ...}}})")
    p.add_argument("--seed", type=int, default=0, help="streaming order")
    p.add_argument("--rows", nargs="+", choices=ROW_NAMES, default=list(ROW_NAMES))
    p.add_argument("--no-compensation", action="store_true",
                   help="daemon with drift compensation off (default: the daemon's own default)")
    p.add_argument("--plot", default=None, help="PNG bar chart (default: next to --json)")
    p.add_argument("--hygiene", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the instrument-hygiene rows: spikes, quality gate, standards, calibration "
                        "(trainer/eval_hygiene.py)")
    add_data_args(p)
    add_logging_args(p)


def merge_rows(rows: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> None:
    """Add ``extra`` rows to ``rows`` in place; where a row exists in both, its own measures are kept and the
    extra ones join it (a name both give is prefixed ``hygiene_``).
    """
    for name, row in extra.items():
        if name not in rows:
            rows[name] = row
            continue
        for key, value in row.items():
            rows[name][f"hygiene_{key}" if key in rows[name] else key] = value


def run(args: Any) -> dict[str, Any]:
    """Run the ``instruments`` subcommand: evaluate, write JSON and plot, print the table."""
    from .eval_hygiene import hygiene_rows

    settings = {"drift": {"compensate_offset": False}} if args.no_compensation else None
    result = evaluate_instruments(args.bundle, args.data_dir, args.seed, args.rows, settings)
    if args.hygiene:
        merge_rows(result["rows"], hygiene_rows(args.bundle, args.data_dir, args.seed))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot = write_plot(result, Path(args.plot) if args.plot else out.with_suffix(".png"))
    for name, r in result["rows"].items():
        if "n" not in r:  # the calibration rows: a table of their own in the JSON
            continue
        top1 = "-" if r.get("top1") is None else f"{r['top1']:.1f}"
        flagged = "-" if r.get("flagged") is None else f"{r['flagged']:.1f}"
        print(f"{name:28s} n={r['n']:4d}  top-1 {top1:>5s} %  flagged {flagged:>5s} %  rejected {r.get('rejected', '-')}")
    print(f"wrote {out}" + (f" and {plot}" if plot else ""))
    return result
