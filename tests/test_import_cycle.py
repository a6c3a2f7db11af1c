"""edge.synthetic and edge.data do not import each other at module level (DESIGN.md: the synthetic library
imports nothing from the loaders); SpectraSet, which both return, lives in edge.spectra."""

import subprocess
import sys


def _fresh(code: str) -> list[str]:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_synthetic_imports_without_edge_data():
    out = _fresh("import sys, edge.synthetic\nprint('edge.data' in sys.modules, 'edge.spectra' in sys.modules)\n"
                 "s = edge.synthetic.synthetic_split('synthetic:train')\nprint(type(s).__module__, len(s) > 0)")
    assert out == ["False", "True", "edge.spectra", "True"]


def test_data_imports_without_edge_synthetic_and_keeps_spectraset():
    out = _fresh("import sys, edge.data, edge.spectra\nprint('edge.synthetic' in sys.modules)\n"
                 "print(edge.data.SpectraSet is edge.spectra.SpectraSet)\n"
                 "s = edge.data.load_spectra('synthetic:test')\n"
                 "print(isinstance(s, edge.data.SpectraSet), 'edge.synthetic' in sys.modules)")
    assert out == ["False", "True", "True", "True"]
