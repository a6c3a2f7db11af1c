"""``python -m trainer``: the trainer (same as ``edge-train``)."""
import sys

from .cli import main

sys.exit(main())
