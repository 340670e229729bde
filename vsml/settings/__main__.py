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
    from vsml.run_checks import registry_names  # noqa: PLC0415 — the program, not the settings layer: it may list them

    print(reference_markdown(names_of=registry_names), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
