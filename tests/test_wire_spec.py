"""The wire specification: schema file vs code, conformance vectors vs decoder, docs/wire.md vs the field tables."""

import json
import re
from pathlib import Path

import msgpack
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from edge.errors import WireError
from edge.wire import decode_event, decode_spectrum, encode_event, encode_spectrum
from edge.wire_spec import MESSAGES, SCHEMA_PATH, json_schema, validator
from edge.wire_vectors import VECTORS_PATH, build_vectors

VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]
SPEC = (Path(__file__).parents[1] / "docs" / "wire.md").read_text(encoding="utf-8")


def test_schema_file_is_generated_from_the_field_tables():
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == json.loads(json.dumps(json_schema()))
    Draft202012Validator.check_schema(json_schema())


def test_vector_file_matches_generator():
    assert VECTORS == json.loads(json.dumps(build_vectors()))["vectors"]


def _as_list(a):
    return None if a is None else a.tolist()


@pytest.mark.parametrize("case", [c for c in VECTORS if c["message"] == "spectrum" and len(c["frames_hex"]) == 1],
                         ids=lambda c: c["name"])
def test_spectrum_vectors_decode_as_specified(case):
    frame = bytes.fromhex(case["frames_hex"][0])
    if "decoded" in case:
        want = case["decoded"]
        s = decode_spectrum(frame)
        if want["id"] is None:
            assert re.fullmatch(r"[0-9a-f]{16}", s.id)
        else:
            assert s.id == want["id"]
        assert _as_list(s.intensity) == want["intensity"]
        assert _as_list(s.raman_shift_cm1) == want["raman_shift_cm1"]
        got = {k: getattr(s, k) for k in ("sent_ns", "instrument_id", "instrument_seq", "label")}
        assert got == {k: want[k] for k in got}
        assert all(type(v) is int for v in (s.sent_ns, s.instrument_seq) if v is not None)
        msg = msgpack.unpackb(frame, raw=False)  # and the message is valid under the JSON Schema
        assert not list(validator(message="spectrum").iter_errors(msg))
    else:
        want = case["rejected"]
        with pytest.raises(WireError, match=re.escape(want["detail_contains"])) as info:
            decode_spectrum(frame)
        ident = {k: info.value.identity.get(k) for k in ("id", "instrument_id", "instrument_seq")}
        assert ident == {k: want[k] for k in ident}


@pytest.mark.parametrize("case", [c for c in VECTORS if c["message"] == "event"], ids=lambda c: c["name"])
def test_event_vectors_decode_as_specified(case):
    frame = bytes.fromhex(case["frames_hex"][0])
    if "decoded" in case:
        assert decode_event(frame) == case["decoded"]
        assert not list(validator(message=f"{case['decoded']['type']}_event").iter_errors(case["decoded"]))
    else:
        with pytest.raises(WireError, match=re.escape(case["rejected"]["detail_contains"])) as info:
            decode_event(frame)
        assert info.value.identity.get("instrument_seq") == case["rejected"]["instrument_seq"]


def test_encoders_write_what_the_schema_allows():
    s = encode_spectrum(np.ones(4, np.float32), np.arange(4.0) + 200, id="a", instrument_id="i", instrument_seq=1,
                        label="Quartz")
    assert not list(validator(message="spectrum").iter_errors(msgpack.unpackb(s, raw=False)))
    ev = msgpack.unpackb(encode_event("lost", instrument_seq=3, reason="gone", instrument_id=None), raw=False)
    assert not list(validator(message="lost_event").iter_errors(ev))


def test_validator_tells_bin_from_str_and_int_from_float():
    bad = {"type": "spectrum", "v": 1, "intensity": {"dtype": "<f4", "shape": [1], "data": "abcd"}, "sent_ns": 1.5}
    errors = " / ".join(e.message for e in validator(message="spectrum").iter_errors(bad))
    assert "'abcd' is not msgpack bin" in errors and "1.5 is not msgpack int" in errors
    ok = {**bad, "intensity": {**bad["intensity"], "data": b"abcd"}, "sent_ns": 1.7e18}  # integral float: allowed
    assert not list(validator(message="spectrum").iter_errors(ok))


def _field_table(name: str) -> str:
    """The field table (``| field | ...``) of the docs/wire.md section whose heading names ``name`` in backticks."""
    m = re.search(rf"^#+ [^\n]*`{re.escape(name)}`[^\n]*$(.*?)(?=^#+ |\Z)", SPEC, re.S | re.M)
    assert m, f"docs/wire.md has no section for `{name}`"
    t = re.search(r"^\| field \|.*?(?=^[^|]|\Z)", m.group(1), re.S | re.M)
    assert t, f"docs/wire.md, section `{name}`, has no field table"
    return t.group(0)


@pytest.mark.parametrize("name", ["array", *MESSAGES])
def test_spec_documents_every_field_of_every_message(name):
    section = _field_table(name)
    fields = json_schema()["$defs"][name]["properties"]
    missing = [f for f in fields if not re.search(rf"^\| `{re.escape(f)}` \|", section, re.M)]
    assert not missing, f"docs/wire.md, section `{name}`, lacks table rows for {missing}"
    extra = set(re.findall(r"^\| `([a-z_0-9]+)` \|", section, re.M)) - set(fields)
    assert not extra, f"docs/wire.md, section `{name}`, documents fields the code does not have: {extra}"


def _fuzz_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=8),
                        st.binary(max_size=16))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                        max_leaves=12)


def test_decoders_raise_only_wire_errors_on_arbitrary_maps():
    """Any msgpack map with the spectrum's or an event's keys, holding arbitrary values: a decoded spectrum or
    event, or a WireError, never a foreign exception (which would once have stopped the daemon)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edge.wire_spec import ARRAY_DTYPES

    fuzz = _fuzz_values()
    keys = ["id", "raman_shift_cm1", "sent_ns", "instrument_id", "instrument_seq", "label", "state", "reason"]
    arrays = st.one_of(fuzz, st.fixed_dictionaries({
        "dtype": st.one_of(st.sampled_from(ARRAY_DTYPES), fuzz),
        "shape": st.one_of(st.lists(st.integers(-1, 6), max_size=2), fuzz),
        "data": st.one_of(st.binary(max_size=48), fuzz)}))
    maps = st.fixed_dictionaries(
        {"type": st.sampled_from(["spectrum", "spectrum", "link", "lost"]), "v": st.sampled_from([1, 1, 1.0, True]),
         "intensity": arrays},
        optional={**{k: fuzz for k in keys}, "raman_shift_cm1": arrays})

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(maps)
    def run(m):
        frame = msgpack.packb(m, use_bin_type=True)
        for decode in (decode_spectrum, decode_event):
            try:
                decode(frame)
            except WireError:
                pass

    run()
