"""The onboard packages import and run without torch or onnx (a Jetson runs them)."""

import subprocess
import sys


def test_edge_and_bridge_import_without_torch_and_onnx():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "import edge, edge.daemon, edge.client, edge.demo, edge.cli, edge.data, edge.synthetic, firmware_bridge\n"
            "import edge.serial_input, edge.bridge_cli\n"
            "import edge.preprocess as p, numpy as np\n"
            "print(p.preprocess(np.ones(1392, np.float32)).shape)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(1392,)" in r.stdout
