"""Prepare datasets ahead of time, or list where they stand.

    python3 -m vsml.data prepare mnist fashion_mnist [--data_dir DIR]
    python3 -m vsml.data status [--data_dir DIR]

``status`` lists every dataset a config may name: the offline ones shipped
inside installed packages, the procedural ones, the TFDS ones (prepared in
the data directory or not), and the form of a user's own ``npz:PATH``.

``prepare`` downloads and converts (needs internet and TensorFlow), showing
progress bars; several ranks or jobs may run it at once (a file lock in the
data directory serialises them). Copy the directory to an offline machine and
point ``data.dir`` (or ``TFDS_DATA_DIR``) at it.
"""

from __future__ import annotations

import argparse
import sys

import tqdm

from vsml import environment, suggest
from vsml.data import registry, tfds_source
from vsml.data.fewshot_source import FEWSHOT_SOURCES as FEWSHOT


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=environment.module_command("vsml.data"), description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download and prepare TFDS datasets")
    prep.add_argument(
        "names", nargs="+", metavar="NAME", help=f"any of {', '.join([*tfds_source.TFDS_SOURCES, *FEWSHOT])}"
    )
    status = sub.add_parser("status", help="every dataset and whether it can be used here")
    for command in (prep, status):
        command.add_argument("--data_dir", help="default: $TFDS_DATA_DIR, else ~/tensorflow_datasets")
    args = parser.parse_args(argv)
    directory = tfds_source.data_dir(args.data_dir)

    if args.command == "status":
        print(status_text(directory))
        return 0

    names = [FEWSHOT.get(name, name) for name in args.names]
    unknown = [name for name in names if name not in tfds_source.TFDS_SOURCES]
    if unknown:
        known = [*tfds_source.TFDS_SOURCES, *FEWSHOT]
        print(
            f"error: unknown dataset(s) {', '.join(name + suggest.did_you_mean(name, known) for name in unknown)}; "
            f"valid: {', '.join(known)}",
            file=sys.stderr,
        )
        return 2
    to_prepare = [name for name in dict.fromkeys(names) if not tfds_source.is_prepared(name, directory)]
    missing = environment.missing_modules(
        {"tensorflow_datasets": "tensorflow-datasets", "tensorflow": "tensorflow-cpu"}
    )
    if to_prepare and missing:  # TFDS downloads and converts; it writes every image through TensorFlow
        print(
            environment.missing_message(
                f"preparing {', '.join(to_prepare)}", missing, environment.PREPARE_REQUIREMENTS
            ),
            file=sys.stderr,
        )
        return 1
    for name in tqdm.tqdm(dict.fromkeys(names), desc="datasets", unit="dataset"):
        try:
            path = tfds_source.prepare(name, directory, download=tfds_source.downloadable(name))
        except tfds_source.DatasetUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        tqdm.tqdm.write(f"{name}: ready ({path})")
    return 0


def status_text(directory) -> str:
    """The table ``status`` prints: each dataset, whether it can be used here, what it is."""
    rows, last_heading = [], None  # (heading, None, None) opens a group; sources in a row may share one
    for source in registry.SOURCES:
        heading, source_rows = source.status(directory)
        if heading != last_heading:
            rows.append((heading, None, None))
            last_heading = heading
        rows += source_rows
    width = max(len(name) for name, state, _ in rows if state is not None)
    state_width = max(len(state) for _, state, _ in rows if state is not None)
    lines = []
    for name, state, what in rows:
        lines.append(f"{name}:" if state is None else f"  {name:{width}s}  {state:{state_width}s}  {what}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
