"""A seeded mix of malformed input messages interleaved with valid spectra, and how to score the daemon's answers.

Issue #17: under a mix of bad input the daemon must not crash, must answer every valid spectrum exactly once and
every malformed message once on the ``error`` topic, and must keep its memory bounded. :func:`malformed_mix`
builds such a mix (reproducible from its seed); :func:`score_answers` checks what a daemon published against
it. ``edge-bench malformed`` (bench/bench_malformed.py) and tests/test_malformed_mix.py drive a running daemon
with it.

Every message is one ZeroMQ message (a tuple of frames) with the answer the wire specification
(docs/wire.md) promises for it, written from how the message was built, never by running the decoder:

* ``expect = "prediction"``: a valid spectrum (on the model grid, or on its own axis; also a 1 MB spectrum of
  65 536 float64 points and axis, and one with thousands of unknown fields): one ``prediction``;
* ``expect = "error"``: one ``error`` (with ``reason`` when the specification names it): the conformance
  vectors' invalid cases (:mod:`edge.wire_vectors`, identity fields rewritten so each answer can be matched),
  events sent on the public input, and the kinds below (truncated, empty, non-UTF-8, deep nesting, wrong types
  for every array field, shape lies, NaN/Inf, axis not increasing or off the grid, ...);
* ``expect = "answer"``: exactly one answer, prediction or error (zeros, subnormals, values at the limit ...);
* ``expect = "dropped"``: larger than :data:`edge.wire.MAX_MESSAGE_BYTES`: ZeroMQ drops it before the daemon
  reads it (``zmq.MAXMSGSIZE``) and closes the connection that sent it, so it must travel on a connection of
  its own.

Each message carries ``instrument_seq = index`` and ``id = "mix-<index>"`` where its kind allows; ``key`` is
what the answer will carry (:func:`answer_key`): the ``instrument_seq``, else the ``id``, else None for a
message whose identity cannot be read (its error has nil ``id``; those are matched by count).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from .errors import ConfigError
from .preprocess import RamanGrid
from .synthetic import SyntheticConfig, SyntheticLibrary
from .wire import MAX_MESSAGE_BYTES, MAX_POINTS, WIRE_VERSION, pack_array
from .wire_spec import MAX_STR_CHARS

__all__ = ["EXPECTS", "MixMessage", "answer_key", "kinds", "malformed_mix", "score_answers"]

#: What a mix message must get: one prediction, one error, either one, or nothing (dropped by ZeroMQ).
EXPECTS = ("prediction", "error", "answer", "dropped")
_SENT_NS = 1_700_000_000_000_000_000
_INSTRUMENT = "fuzz"


@dataclass(frozen=True)
class MixMessage:
    """One input message of the mix and the answer it must get.

    Attributes
    ----------
    index : int
        Position in the mix (also its ``instrument_seq`` where the kind allows).
    kind : str
        ``"valid"``, a kind of :func:`kinds` (``"vector:<name>"`` for a conformance vector).
    frames : tuple of bytes
        The ZeroMQ message (more than one frame: a multipart message).
    expect : {"prediction", "error", "answer", "dropped"}
    reason : str or None
        The ``error`` reason the specification names (``wire``, ``preprocess``, ``coverage``); None: any.
    key : int, str or None
        What :func:`answer_key` of its answer returns; None when its identity cannot be read.
    """

    index: int
    kind: str
    frames: tuple[bytes, ...]
    expect: str
    reason: str | None = None
    key: int | str | None = None

    @property
    def nbytes(self) -> int:
        """Bytes in all frames."""
        return sum(len(f) for f in self.frames)


def answer_key(payload: Mapping[str, Any]) -> int | str | None:
    """The key an answer (``prediction`` or ``error`` payload) is matched by: ``instrument_seq``, else ``id``."""
    seq = payload.get("instrument_seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        return seq
    sid = payload.get("id")
    return sid if isinstance(sid, str) else None


# -- building blocks -----------------------------------------------------------------------------------------
@dataclass
class _Ctx:
    """What a kind's builder gets: the message index, the random generator, the grid and valid intensities."""

    index: int
    rng: np.random.Generator
    grid: RamanGrid
    min_coverage: float
    pool: np.ndarray  # shape (K, N) float32: valid spectra on the grid

    @property
    def uid(self) -> str:
        return f"mix-{self.index}"

    def intensity(self) -> np.ndarray:
        """A valid spectrum on the grid, shape (N,), float32 (a pool row times a random gain)."""
        row = self.pool[self.rng.integers(len(self.pool))]
        return (row * self.rng.uniform(0.5, 2.0)).astype(np.float32)

    def spectrum(self, intensity: np.ndarray | None = None, axis: np.ndarray | None = None,
                 with_axis: bool = True, **fields: Any) -> dict[str, Any]:
        """A valid spectrum map (docs/wire.md §4.1) with this message's identity, ``fields`` overriding."""
        y = self.intensity() if intensity is None else intensity
        m: dict[str, Any] = {"type": "spectrum", "v": WIRE_VERSION, "id": self.uid, "intensity": pack_array(y)}
        if with_axis:
            m["raman_shift_cm1"] = pack_array(self.grid.axis.astype(np.float32) if axis is None else axis)
        m.update(sent_ns=_SENT_NS + self.index, instrument_id=_INSTRUMENT, instrument_seq=self.index)
        m.update(fields)
        return m

    def msg(self, kind: str, frames: Sequence[bytes] | bytes, expect: str, reason: str | None = None,
            key: int | str | bool | None = True) -> MixMessage:
        """A :class:`MixMessage`; ``key=True`` means this message's ``instrument_seq`` (the index)."""
        frames = (frames,) if isinstance(frames, bytes) else tuple(frames)
        return MixMessage(self.index, kind, frames, expect, reason, self.index if key is True else key or None)


def _pack(m: Any) -> bytes:
    return msgpack.packb(m, use_bin_type=True)


def _splice(m: dict[str, Any], field: str, raw: bytes) -> bytes:
    """Pack ``m`` with the raw msgpack bytes ``raw`` as the value of ``field`` (or as a key when ``field`` is
    absent from ``m``: then ``raw`` is a key and nil its value): for what msgpack-python will not pack itself.
    """
    marker = "\x01splice-marker\x01"
    if field in m:
        packed = _pack({**m, field: marker})
    else:
        packed = _pack({**m, marker: None})
    token = _pack(marker)
    if packed.count(token) != 1:  # the marker's bytes inside an array's data: vanishingly rare, never silent
        raise ConfigError("splice marker found twice in a packed message")
    return packed.replace(token, raw)


def _raw_str(b: bytes) -> bytes:
    """A msgpack str header and ``b`` (which need not be UTF-8)."""
    return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b


def _nested(depth: int) -> bytes:
    """``depth`` nested one-element arrays around nil, as msgpack bytes."""
    return b"\x91" * depth + b"\xc0"


def _nested_list(depth: int) -> Any:
    """``depth`` nested one-element lists around None."""
    out: Any = None
    for _ in range(depth):
        out = [out]
    return out


def _huge_axis(grid: RamanGrid) -> np.ndarray:
    """An axis of :data:`MAX_POINTS` float64 points a little wider than the grid, shape (65536,)."""
    return np.linspace(grid.start_cm1 - 5.0, grid.stop_cm1 + 5.0, MAX_POINTS)


def _on_axis(ctx: _Ctx, axis: np.ndarray) -> np.ndarray:
    """A valid spectrum interpolated onto ``axis`` (float64)."""
    return np.interp(axis, ctx.grid.axis, ctx.intensity().astype(np.float64))


def _covered(axis: np.ndarray, grid: RamanGrid) -> float:
    """Fraction of the grid's span that ``axis`` (increasing) spans."""
    lo, hi = max(axis[0], grid.start_cm1), min(axis[-1], grid.stop_cm1)
    return max(0.0, float(hi - lo)) / (grid.stop_cm1 - grid.start_cm1)


# -- the kinds -----------------------------------------------------------------------------------------------
_Builder = Callable[[_Ctx], MixMessage]
_KINDS: dict[str, _Builder] = {}


def _kind(name: str) -> Callable[[_Builder], _Builder]:
    def register(fn: _Builder) -> _Builder:
        _KINDS[name] = fn
        return fn
    return register


def _keyed_wire(name: str, mutate: Callable[[_Ctx, dict[str, Any]], Any]) -> None:
    """Register a kind: a valid spectrum map mutated in place by ``mutate``; one ``wire`` error naming it."""
    def build(ctx: _Ctx) -> MixMessage:
        m = ctx.spectrum()
        mutate(ctx, m)
        return ctx.msg(name, _pack(m), "error", "wire")
    _KINDS[name] = build


def _set_array(field: str, **part: Any) -> Callable[[_Ctx, dict[str, Any]], None]:
    def mutate(ctx: _Ctx, m: dict[str, Any]) -> None:
        m[field] = {**m[field], **part}
    return mutate


def _shape_lie(delta: int) -> Callable[[_Ctx, dict[str, Any]], None]:
    def mutate(ctx: _Ctx, m: dict[str, Any]) -> None:
        m["intensity"]["shape"] = [m["intensity"]["shape"][0] + delta]
    return mutate


# wrong types and lies in every array field (docs/wire.md §4.2) and in the message fields (§4.1)
for _name, _mutate in {
    "dtype_unsupported_f2": _set_array("intensity", dtype="<f2"),
    "dtype_object": _set_array("intensity", dtype="O"),
    "dtype_as_int": _set_array("intensity", dtype=4),
    "dtype_empty_str": _set_array("intensity", dtype=""),
    "axis_dtype_list": _set_array("raman_shift_cm1", dtype=["<f4"]),
    "shape_lie_longer": _shape_lie(+1),
    "shape_lie_shorter": _shape_lie(-1),
    "shape_as_int": lambda c, m: m["intensity"].update(shape=m["intensity"]["shape"][0]),
    "shape_negative": lambda c, m: m["intensity"].update(shape=[-m["intensity"]["shape"][0]]),
    "shape_beyond_uint64": lambda c, m: m["intensity"].update(shape=[2**64 - 1]),
    "shape_as_float": lambda c, m: m["intensity"].update(shape=[float(m["intensity"]["shape"][0])]),
    "shape_as_map": lambda c, m: m["intensity"].update(shape={"0": m["intensity"]["shape"][0]}),
    "data_as_list": lambda c, m: m["intensity"].update(data=[1.0, 2.0, 3.0]),
    "data_as_int": lambda c, m: m["intensity"].update(data=0),
    "data_missing": lambda c, m: m["intensity"].pop("data"),
    "intensity_as_list": lambda c, m: m.update(intensity=[float(v) for v in c.intensity()[:64]]),
    "intensity_as_bin": lambda c, m: m.update(intensity=c.intensity().tobytes()),
    "intensity_nil": lambda c, m: m.update(intensity=None),
    "axis_as_str": lambda c, m: m.update(raman_shift_cm1="200-1591"),
    "type_missing": lambda c, m: m.pop("type"),
    "type_upper_case": lambda c, m: m.update(type="SPECTRUM"),
    "version_float": lambda c, m: m.update(v=1.0),
    "version_beyond_int64": lambda c, m: m.update(v=2**64 - 1),
    "version_nil": lambda c, m: m.update(v=None),
    "label_too_long": lambda c, m: m.update(label="L" * (MAX_STR_CHARS + 1)),
    "label_ext_type": lambda c, m: m.update(label=msgpack.ExtType(5, b"\x00\x01")),
    "sent_ns_timestamp_ext": lambda c, m: m.update(sent_ns=msgpack.Timestamp(1_700_000_000, 0)),
    "sent_ns_nan": lambda c, m: m.update(sent_ns=float("nan")),
    "id_empty": lambda c, m: m.update(id=""),  # the error echoes instrument_seq (the key)
    "instrument_id_as_map": lambda c, m: m.update(instrument_id={"name": "x"}),
    "label_nested_300": lambda c, m: m.update(label=_nested_list(300)),
}.items():
    _keyed_wire(_name, _mutate)


@_kind("axis_count_wrong_length")
def _axis_short(ctx: _Ctx) -> MixMessage:  # counts and axis of different lengths (a real spectrum's size)
    m = ctx.spectrum(axis=ctx.grid.axis[:-7].astype(np.float32))
    return ctx.msg("axis_count_wrong_length", _pack(m), "error", "wire")


@_kind("instrument_seq_negative_id_key")
def _seq_negative(ctx: _Ctx) -> MixMessage:  # the error cannot echo instrument_seq: matched by id
    return ctx.msg("instrument_seq_negative_id_key", _pack(ctx.spectrum(instrument_seq=-5)), "error", "wire", ctx.uid)


# undecodable: the error has a nil id (matched by count)
@_kind("truncated_msgpack")
def _truncated(ctx: _Ctx) -> MixMessage:
    full = _pack(ctx.spectrum())
    return ctx.msg("truncated_msgpack", full[: int(ctx.rng.integers(1, len(full)))], "error", "wire", None)


@_kind("trailing_garbage")
def _trailing(ctx: _Ctx) -> MixMessage:
    return ctx.msg("trailing_garbage", _pack(ctx.spectrum()) + b"\xc1junk", "error", "wire", None)


@_kind("empty_frame")
def _empty(ctx: _Ctx) -> MixMessage:
    return ctx.msg("empty_frame", b"", "error", "wire", None)


@_kind("random_bytes")
def _random_bytes(ctx: _Ctx) -> MixMessage:
    return ctx.msg("random_bytes", b"\xc1" + ctx.rng.bytes(int(ctx.rng.integers(1, 4096))), "error", "wire", None)


@_kind("random_bytes_near_limit")
def _random_big(ctx: _Ctx) -> MixMessage:  # huge but under the limit: read in full, refused
    n = int(ctx.rng.integers(MAX_MESSAGE_BYTES // 2, MAX_MESSAGE_BYTES - 1024))
    return ctx.msg("random_bytes_near_limit", b"\xc1" + ctx.rng.bytes(n), "error", "wire", None)


@_kind("non_utf8_id")
def _non_utf8_id(ctx: _Ctx) -> MixMessage:
    return ctx.msg("non_utf8_id", _splice(ctx.spectrum(), "id", _raw_str(b"\xff\xfe\xfd bad")), "error", "wire", None)


@_kind("non_utf8_label")
def _non_utf8_label(ctx: _Ctx) -> MixMessage:
    raw = _splice(ctx.spectrum(), "label", _raw_str(b"Quartz\xc3\x28"))
    return ctx.msg("non_utf8_label", raw, "error", "wire", None)


@_kind("non_utf8_key")
def _non_utf8_key(ctx: _Ctx) -> MixMessage:
    raw = _splice(ctx.spectrum(), "\x00absent", _raw_str(b"k\xed\xa0\x80"))
    return ctx.msg("non_utf8_key", raw, "error", "wire", None)


@_kind("int_map_key")
def _int_key(ctx: _Ctx) -> MixMessage:
    return ctx.msg("int_map_key", _pack({**ctx.spectrum(), 7: "seven"}), "error", "wire", None)


@_kind("deep_nesting_100k")
def _deep_top(ctx: _Ctx) -> MixMessage:
    return ctx.msg("deep_nesting_100k", _nested(100_000), "error", "wire", None)


@_kind("deep_nesting_in_field")
def _deep_field(ctx: _Ctx) -> MixMessage:  # beyond msgpack's nesting limit: the whole frame is unreadable
    return ctx.msg("deep_nesting_in_field", _splice(ctx.spectrum(), "label", _nested(5000)), "error", "wire", None)


@_kind("multipart_empty_frames")
def _multipart_empty(ctx: _Ctx) -> MixMessage:
    return ctx.msg("multipart_empty_frames", (b"", b"", b""), "error", "wire", None)


@_kind("multipart_spectrum_and_garbage")
def _multipart_two(ctx: _Ctx) -> MixMessage:  # refused as one message, echoing the first frame's identity
    return ctx.msg("multipart_spectrum_and_garbage", (_pack(ctx.spectrum()), b"\xc1"), "error", "wire")


# values the preprocessing refuses (docs/wire.md §4.1, §6.2)
def _preprocess(name: str, make: Callable[[_Ctx], dict[str, Any]]) -> None:
    _KINDS[name] = lambda ctx: ctx.msg(name, _pack(make(ctx)), "error", "preprocess")


def _with(values: Mapping[int, float], dtype: str = "<f4") -> Callable[[_Ctx], dict[str, Any]]:
    def make(ctx: _Ctx) -> dict[str, Any]:
        y = ctx.intensity().astype(dtype)
        for i, v in values.items():
            y[i] = v
        return ctx.spectrum(y)
    return make


_preprocess("nan_intensity", _with({17: float("nan")}))
_preprocess("inf_intensity", _with({300: float("inf")}))
_preprocess("neg_inf_intensity_f8", _with({-3: float("-inf")}, "<f8"))
_preprocess("all_nan", lambda c: c.spectrum(np.full(c.grid.n_points, np.nan, np.float32)))
_preprocess("nan_axis", lambda c: c.spectrum(axis=np.where(np.arange(c.grid.n_points) == 9, np.nan,
                                                           c.grid.axis).astype(np.float32)))
_preprocess("axis_decreasing", lambda c: c.spectrum(c.intensity()[::-1].copy(), c.grid.axis[::-1].astype(np.float32)))
_preprocess("axis_repeated_values", lambda c: c.spectrum(axis=np.repeat(c.grid.axis[::2], 2)[: c.grid.n_points]
                                                         .astype(np.float32)))
_preprocess("counts_wrong_length_no_axis", lambda c: c.spectrum(c.intensity()[:-100].copy(), with_axis=False))


@_kind("huge_nan")
def _huge_nan(ctx: _Ctx) -> MixMessage:  # 1 MB: 65 536 float64 points and axis, one NaN
    axis = _huge_axis(ctx.grid)
    y = _on_axis(ctx, axis)
    y[int(ctx.rng.integers(MAX_POINTS))] = np.nan
    return ctx.msg("huge_nan", _pack(ctx.spectrum(y, axis)), "error", "preprocess")


def _range_kind(name: str, lo_frac: float, hi_frac: float) -> None:
    """A spectrum measured over part of the grid (fractions of its span; beyond [0, 1] is off the grid)."""
    def build(ctx: _Ctx) -> MixMessage:
        g = ctx.grid
        span = g.stop_cm1 - g.start_cm1
        axis = np.linspace(g.start_cm1 + lo_frac * span, g.start_cm1 + hi_frac * span, 500)
        covered = _covered(axis, g)
        if covered == 0.0:
            expect, reason = "error", ("coverage" if ctx.min_coverage > 0 else "preprocess")
        elif covered < ctx.min_coverage:
            expect, reason = "error", "coverage"
        else:
            expect, reason = "answer", None  # covered enough: classified (or refused by preprocessing)
        return ctx.msg(name, _pack(ctx.spectrum(_on_axis(ctx, axis), axis)), expect, reason)
    _KINDS[name] = build


_range_kind("axis_off_the_grid", 3.0, 4.0)
_range_kind("axis_covering_a_tenth", 0.45, 0.55)
_range_kind("axis_covering_half", 0.0, 0.5)


# exactly one answer, either kind
def _answer(name: str, make: Callable[[_Ctx], dict[str, Any]]) -> None:
    _KINDS[name] = lambda ctx: ctx.msg(name, _pack(make(ctx)), "answer")


_answer("zeros", lambda c: c.spectrum(np.zeros(c.grid.n_points, np.float32)))
_answer("constant", lambda c: c.spectrum(np.full(c.grid.n_points, 123.0, np.float32)))
_answer("subnormal_f4", lambda c: c.spectrum((c.intensity() / c.intensity().max() * 1e-40).astype(np.float32)))
_answer("at_intensity_limit_f8", lambda c: c.spectrum((c.intensity() / c.intensity().max() * 1e15).astype(np.float64)))
_answer("negative_counts_i2", lambda c: c.spectrum(-np.abs(c.intensity()).clip(0, 3e4).astype(np.int16)))
_answer("single_point", lambda c: c.spectrum(np.ones(1, np.float32), np.array([800.0], np.float32)))
_answer("id_with_control_characters", lambda c: c.spectrum(id="a\x00b\n\x1b[31m"))


# valid, if unusual: one prediction
@_kind("huge_valid_f8")
def _huge_valid(ctx: _Ctx) -> MixMessage:  # 1 MB: the largest spectrum the wire allows
    axis = _huge_axis(ctx.grid)
    return ctx.msg("huge_valid_f8", _pack(ctx.spectrum(_on_axis(ctx, axis), axis)), "prediction")


@_kind("many_unknown_fields")
def _unknown_fields(ctx: _Ctx) -> MixMessage:
    m = ctx.spectrum()
    m.update({f"x{i}": i for i in range(3000)})
    return ctx.msg("many_unknown_fields", _pack(m), "prediction")


@_kind("oversize")
def _oversize(ctx: _Ctx) -> MixMessage:  # just over the limit: ZeroMQ drops it (and its connection)
    m = ctx.spectrum()
    pad = MAX_MESSAGE_BYTES - len(_pack(m)) + int(ctx.rng.integers(1, 65536))
    return ctx.msg("oversize", _pack({**m, "padding": bytes(pad)}), "dropped")


# -- the conformance vectors' invalid cases (edge/wire_vectors.py), identity rewritten for matching ----------
@functools.cache
def _vectors() -> dict[str, dict[str, Any]]:
    from .wire_vectors import build_vectors

    out = {}
    for v in build_vectors()["vectors"]:
        refused = "rejected" in v or v["message"] == "event"  # every event is refused on the public input
        if refused:
            out[f"vector:{v['name']}"] = v
    return out


def _vector_message(ctx: _Ctx, kind: str) -> MixMessage:
    """A vector's frames with this message's ``id`` and ``instrument_seq`` wherever the daemon echoes them (the
    vector's own were echoed, or the map lacks them; an event on the public input echoes whatever is readable),
    so its error can be matched; undecodable frames are sent as they are.
    """
    v = _vectors()[kind]
    echo = v["rejected"] if v["message"] == "spectrum" else {"id": "any", "instrument_seq": 0}
    frames, key_seq, key_id = [], False, False
    for raw in (bytes.fromhex(h) for h in v["frames_hex"]):
        try:
            m = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        except Exception:  # not msgpack (as the vector means it): sent as is
            m = None
        if isinstance(m, dict):
            if echo["instrument_seq"] is not None or "instrument_seq" not in m:
                m["instrument_seq"], key_seq = ctx.index, True
            if echo["id"] is not None or "id" not in m:
                m["id"], key_id = ctx.uid, True
            raw = _pack(m)
        frames.append(raw)
    key: int | str | None = ctx.index if key_seq else ctx.uid if key_id else None
    return MixMessage(ctx.index, kind, tuple(frames), "error", "wire", key)


def kinds() -> tuple[str, ...]:
    """Names of every malformed or unusual kind (``"vector:<name>"`` for a conformance vector), sorted."""
    return tuple(sorted([*_KINDS, *_vectors()]))


def _pool(grid: RamanGrid, seed: int) -> np.ndarray:
    lib = SyntheticLibrary(SyntheticConfig(seed=seed), grid=grid)
    return lib.sample(n_per_class=4, seed=seed + 1).intensities


def _valid(ctx: _Ctx) -> MixMessage:
    """A valid spectrum: float32 on the grid's axis (60 %), without an axis (20 %), uint16 counts (20 %)."""
    u = ctx.rng.uniform()
    if u < 0.6:
        m = ctx.spectrum()
    elif u < 0.8:
        m = ctx.spectrum(with_axis=False)
    else:
        y = ctx.intensity()
        m = ctx.spectrum(np.round(y / y.max() * 60000.0).clip(0, 65535).astype(np.uint16),
                         ctx.grid.axis.astype(np.float64))
    return ctx.msg("valid", _pack(m), "prediction")


def malformed_mix(n_messages: int, seed: int = 0, grid: RamanGrid | None = None, min_coverage: float = 0.0,
                  valid_fraction: float = 0.2, only: Iterable[str] | None = None) -> list[MixMessage]:
    """Build a seeded mix of valid spectra and malformed messages.

    Parameters
    ----------
    n_messages : int
        Messages in the mix (≥ 1).
    seed : int
        Seed of every random choice: the same seed gives the same bytes.
    grid : RamanGrid, optional
        The model's Raman-shift grid (the bundle's ``grid``; default 200–1591 cm⁻¹): valid spectra are synthetic
        spectra (:mod:`edge.synthetic`) on it.
    min_coverage : float
        The bundle's ``preprocessing.min_coverage``: decides whether a partial-range spectrum must be refused
        (``coverage``) or may be classified.
    valid_fraction : float
        Expected fraction of plain valid spectra, in [0, 1]; the rest is drawn uniformly from the kinds.
    only : iterable of str, optional
        Draw from these kinds only (names from :func:`kinds`).

    Returns
    -------
    list of MixMessage
        In sending order; message ``i`` has ``index`` i.

    Raises
    ------
    ConfigError
        For ``n_messages`` < 1, a fraction outside [0, 1], or an unknown kind.
    """
    if n_messages < 1 or not 0.0 <= valid_fraction <= 1.0:
        raise ConfigError(f"need n_messages ≥ 1 and valid_fraction in [0, 1], got {n_messages}, {valid_fraction}")
    names = kinds() if only is None else tuple(only)
    unknown = sorted(set(names) - set(kinds()))
    if unknown or not names:
        raise ConfigError(f"unknown kind(s) {unknown}; kinds: {', '.join(kinds())}")
    grid = grid or RamanGrid()
    rng = np.random.default_rng(seed)
    pool = _pool(grid, seed)
    out = []
    for i in range(n_messages):
        ctx = _Ctx(i, rng, grid, min_coverage, pool)
        if rng.uniform() < valid_fraction:
            out.append(_valid(ctx))
            continue
        kind = names[int(rng.integers(len(names)))]
        out.append(_vector_message(ctx, kind) if kind.startswith("vector:") else _KINDS[kind](ctx))
    return out


# -- scoring -------------------------------------------------------------------------------------------------
def score_answers(messages: Sequence[MixMessage], answers: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Check a daemon's answers against the mix.

    Parameters
    ----------
    messages : sequence of MixMessage
        The mix as sent (:func:`malformed_mix`).
    answers : iterable of (topic, payload)
        What the daemon published on ``prediction`` and ``error`` (other topics are ignored).

    Returns
    -------
    dict
        ``valid_sent``, ``predicted`` (valid spectra predicted at least once), ``predicted_more_than_once``,
        ``valid_missing``; ``malformed_sent`` (every message not expected to be predicted nor dropped),
        ``malformed_answered`` (answered as the specification says), ``malformed_missing``,
        ``answered_more_than_once``, ``wrong_answer`` (first examples: kind, expected, got),
        ``anonymous_sent``/``anonymous_errors`` (messages whose identity cannot be read, and errors with no
        identity), ``dropped_sent`` (over the size limit; must get no answer), ``dropped_answered``,
        ``unexpected_answers`` (answers matching no message), ``rejections_by_reason`` (errors by reason),
        ``by_kind`` (per kind: ``sent``, ``as_expected`` among those matched by key, ``anonymous`` for those
        matched by count), and ``ok`` (all of the above as required).
    """
    by_key: dict[int | str, list[tuple[str, Mapping[str, Any]]]] = {}
    anonymous_errors, unexpected = 0, 0
    reasons: Counter[str] = Counter()
    keys = {m.key for m in messages if m.key is not None}
    for topic, payload in answers:
        if topic not in ("prediction", "error"):
            continue
        if topic == "error":
            reasons[str(payload.get("reason"))] += 1
        key = answer_key(payload)
        if key is None:
            anonymous_errors += topic == "error"
            unexpected += topic != "error"
        elif key in keys:
            by_key.setdefault(key, []).append((topic, payload))
        else:
            unexpected += 1
    stats: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    wrong: list[dict[str, Any]] = []
    for m in messages:
        got = by_key.get(m.key, []) if m.key is not None else []
        ok = _as_expected(m, got)
        group = {"prediction": "valid", "dropped": "dropped"}.get(m.expect, "malformed")
        kind = by_kind.setdefault(m.kind, Counter())
        kind["sent"] += 1
        if m.key is None and m.expect != "dropped":
            kind["anonymous"] += 1  # matched by count, below
        else:
            kind["as_expected"] += ok
        stats[f"{group}_sent"] += 1
        if m.key is None and group == "malformed":
            stats["anonymous_sent"] += 1
            continue
        stats[f"{group}_as_expected"] += ok
        stats[f"{group}_answered"] += len(got) >= 1
        stats[f"{group}_more_than_once"] += len(got) > 1
        stats[f"{group}_predicted"] += any(t == "prediction" for t, _ in got)
        if not ok and len(wrong) < 20:
            wrong.append({"index": m.index, "kind": m.kind, "expect": m.expect, "reason": m.reason,
                          "got": [(t, p.get("reason"), str(p.get("detail", ""))[:120]) for t, p in got]})
    anonymous_answered = min(anonymous_errors, stats["anonymous_sent"])
    report: dict[str, Any] = {
        "valid_sent": stats["valid_sent"], "predicted": stats["valid_predicted"],
        "predicted_more_than_once": stats["valid_more_than_once"],
        "valid_missing": stats["valid_sent"] - stats["valid_answered"],
        "malformed_sent": stats["malformed_sent"],
        "malformed_answered": stats["malformed_as_expected"] + anonymous_answered,
        "malformed_missing": stats["malformed_sent"] - stats["malformed_answered"] - anonymous_answered,
        "answered_more_than_once": stats["malformed_more_than_once"] + stats["valid_more_than_once"],
        "anonymous_sent": stats["anonymous_sent"], "anonymous_errors": anonymous_errors,
        "dropped_sent": stats["dropped_sent"], "dropped_answered": stats["dropped_answered"],
        "unexpected_answers": unexpected, "wrong_answer": wrong,
        "rejections_by_reason": dict(sorted(reasons.items())),
        "by_kind": {k: dict(c) for k, c in sorted(by_kind.items())},
    }
    report["ok"] = (not wrong and report["valid_missing"] == 0 and report["answered_more_than_once"] == 0
                    and report["malformed_missing"] == 0 and anonymous_errors == stats["anonymous_sent"]
                    and report["dropped_answered"] == 0 and unexpected == 0)
    return report


def _as_expected(m: MixMessage, got: list[tuple[str, Mapping[str, Any]]]) -> bool:
    """Whether the answers ``got`` for ``m`` are what the specification promises (anonymous: by count only)."""
    if m.expect == "dropped":
        return not got
    if m.key is None:
        return True  # matched by count in score_answers
    if len(got) != 1:
        return False
    topic, payload = got[0]
    if m.expect == "prediction":
        return topic == "prediction"
    if m.expect == "answer":
        return True
    return topic == "error" and (m.reason is None or payload.get("reason") == m.reason)
