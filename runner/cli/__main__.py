"""``python -m runner.cli``."""

import sys

from .commands import main

sys.exit(main())
