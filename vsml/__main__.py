"""``python3 -m vsml ...``: the same command line as ``launch.py`` and the installed ``vsml``."""

import sys

from vsml.cli import main

sys.exit(main())
