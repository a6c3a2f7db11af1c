"""The README is the front page: short, its links resolve, and its Python examples run as written."""

import contextlib
import io
import re
from pathlib import Path

import pytest
from daemon_harness import RunningDaemon

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 250
    assert "pip install -e \".[all]\" && edge-demo" in README
    assert "pip install -e \".[all]\" && python -m pytest -q" in README


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "the README links its documentation"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


@pytest.mark.realdata
def test_readme_send_and_subscribe_example_runs(rruff_bundle):
    block = next(b for b in _python_blocks() if "SpectrumSender" in b)
    with RunningDaemon(rruff_bundle) as d:
        code = (block.replace("tcp://127.0.0.1:5555", d.daemon.endpoints["input"])
                     .replace("tcp://127.0.0.1:5556", d.daemon.endpoints["output"]))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [f"s{i}" for i in range(5)]


@pytest.mark.realdata
def test_readme_predict_example_runs(rruff_bundle, data_root):
    block = next(b for b in _python_blocks() if "from edge.predict import predict" in b)
    code = (block.replace('bundle="bundles/rruff40"', f"bundle={str(rruff_bundle)!r}")
                 .replace("../shared/data", str(data_root)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert int(out.getvalue().strip()) > 0  # spectra classified from the CHARISMA folder
