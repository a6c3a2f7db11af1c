"""``python -m edge``: the daemon (same as ``edge-daemon``)."""
import sys

from .cli import daemon_main

sys.exit(daemon_main())
