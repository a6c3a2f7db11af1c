"""Onboard side of raman-edge: preprocessing, model bundles, inference backends and the edge daemon.

Imports only numpy, scipy, onnxruntime, pyzmq, pyserial, msgpack and pybaselines: a Jetson runs it.
"""

__version__ = "0.1.0"
