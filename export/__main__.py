"""``python -m export``: the exporter (same as ``edge-export``)."""
import sys

from .cli import main

sys.exit(main())
