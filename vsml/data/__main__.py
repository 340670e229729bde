"""Prepare datasets ahead of time, or list where they stand.

    python3 -m vsml.data prepare mnist fashion_mnist [--data_dir DIR]
    python3 -m vsml.data status [--data_dir DIR]

``prepare`` downloads and converts (needs internet and TensorFlow), showing
progress bars; several ranks or jobs may run it at once (a file lock in the
data directory serialises them). Copy the directory to an offline machine and
point ``data.dir`` (or ``TFDS_DATA_DIR``) at it.
"""

from __future__ import annotations

import argparse
import sys

import tqdm

from vsml import environment
from vsml.data import FEWSHOT, tfds_source


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m vsml.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download and prepare TFDS datasets")
    prep.add_argument("names", nargs="+", metavar="NAME",
                      help=f"any of {', '.join([*tfds_source.TFDS_SOURCES, *FEWSHOT])}")
    status = sub.add_parser("status", help="which TFDS datasets are prepared")
    for command in (prep, status):
        command.add_argument("--data_dir", help="default: $TFDS_DATA_DIR, else ~/tensorflow_datasets")
    args = parser.parse_args(argv)
    config = {"data": {"dir": args.data_dir}}
    directory = tfds_source.data_dir(config)

    if args.command == "status":
        for name in tfds_source.TFDS_SOURCES:
            state = "prepared" if tfds_source.is_prepared(name, directory) else "missing"
            print(f"{name:14s} {state}")
        print(f"(in {directory})")
        return 0

    names = [FEWSHOT.get(name, name) for name in args.names]
    unknown = [name for name in names if name not in tfds_source.TFDS_SOURCES]
    if unknown:
        print(f"error: unknown dataset(s) {', '.join(unknown)}; valid: "
              f"{', '.join([*tfds_source.TFDS_SOURCES, *FEWSHOT])}", file=sys.stderr)
        return 2
    to_prepare = [name for name in dict.fromkeys(names) if not tfds_source.is_prepared(name, directory)]
    missing = environment.missing_modules({"tensorflow_datasets": "tensorflow-datasets",
                                           "tensorflow": "tensorflow-cpu"})
    if to_prepare and missing:  # TFDS downloads and converts; it writes every image through TensorFlow
        print(environment.missing_message(f"preparing {', '.join(to_prepare)}", missing,
                                          environment.PREPARE_REQUIREMENTS), file=sys.stderr)
        return 1
    for name in tqdm.tqdm(dict.fromkeys(names), desc="datasets", unit="dataset"):
        try:
            path = tfds_source.prepare(name, directory, download=tfds_source.downloadable(name))
        except tfds_source.DatasetUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        tqdm.tqdm.write(f"{name}: ready ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
