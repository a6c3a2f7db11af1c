"""The onboard packages import and run without torch or onnx (a Jetson runs them), and without the optional
[formats] (vendor readers) and [distributed] (Dask) extras."""

import subprocess
import sys

OPTIONAL = ["torch", "onnx", "spc_io", "wdf", "jcamp", "sif_parser", "spexread", "dask", "distributed", "pyarrow",
            "matplotlib", "tqdm"]


def test_edge_and_bridge_import_without_torch_and_onnx():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "import edge, edge.daemon, edge.client, edge.demo, edge.cli, edge.data, edge.synthetic, firmware_bridge\n"
            "import edge.serial_input, edge.bridge_cli\n"
            "import edge.preprocess as p, numpy as np\n"
            "print(p.preprocess(np.ones(1392, np.float32)).shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(1392,)" in r.stdout


def test_io_and_predict_import_and_read_text_without_optional_extras(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("Raman Shift,Intensity\n100,1\n200,2\n300,3\n")
    imports = "import edge.io, edge.predict, edge.predict_cli, edge.batch, edge.daemon\n"
    # 1. installed or not, importing them and reading a text file loads none of the optional packages
    code = (f"import sys\n{imports}s = edge.io.read_file({str(f)!r}); print(s.intensities.shape)\n"
            f"print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["(1, 3)", "[]"]
    # 2. with them absent, the same works, and a vendor format names the extra to install
    code = (f"import sys\nfor m in {OPTIONAL!r}: sys.modules[m] = None\n{imports}"
            f"s = edge.io.read_file({str(f)!r}); print(s.intensities.shape)\n"
            "try:\n"
            "    edge.io._common.require('wdf', 'WDF', 'renishaw-wdf')\n"
            "except edge.errors.DataError as exc:\n"
            "    print(exc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "(1, 3)" and "needs the [formats] extra" in out[1] and "renishaw-wdf" in out[1]
