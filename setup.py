"""Packaging shim: everything else is in pyproject.toml.

The configuration files live in ``configs/`` at the top of the repository (where the documentation points);
a wheel installs them as package data of ``edge`` (``edge/configs/*.toml``), so an install from a wheel finds
the default model and daemon configs (``edge.configs_dir``).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["edge*", "trainer*", "export*", "firmware_bridge*", "bench*"]), "edge.configs"],
    package_dir={"edge.configs": "configs"},
    package_data={"firmware_bridge": ["*.md", "*.json"], "edge": ["wire_schema.json", "wire_vectors.json"],
                  "edge.configs": ["*.toml"]},
)
