"""``python3 launch.py ...``: the command line of a checkout, as in the original release.

The same as the installed ``vsml`` command and ``python3 -m vsml`` (all three run
:func:`vsml.cli.main`); ``python3 launch.py --help`` lists the options.
"""

import sys

from vsml.cli import main, parse_args  # noqa: F401 — parse_args: tests and scripts call launch.parse_args

if __name__ == "__main__":
    sys.exit(main())
