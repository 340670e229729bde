"""``python -m vsml.settings --markdown``: the key reference of docs/DESIGN.md §9, from the declarations."""

from __future__ import annotations

import argparse

from vsml.settings import reference_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the key table of docs/DESIGN.md §9")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.print_help()
        return 0
    print(reference_markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
