"""``python -m firmware_bridge simulate --pty`` / ``listen URL``."""

import sys

from .simulator import main

sys.exit(main())
