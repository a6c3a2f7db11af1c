"""Benchmarks: speed, memory and accuracy targets, each written as JSON (``edge-bench``)."""
