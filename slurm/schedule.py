#!/usr/bin/env python3
"""The original release's ``slurm/schedule.py`` command line, run by ``slurm/schedule.sh``.

    slurm/schedule.py --array=1-11 --nodes=32 --time 04:00:00 -- python3 launch.py --array configs/array/datasets.yaml
    slurm/schedule.py --dry-run --nodes=128 --time 04:00:00 -- python3 launch.py --config_files configs/rand_proj.yaml

Everything before ``--`` is read as the original read it, sbatch options, and
handed to ``slurm/schedule.sh`` (one implementation, the same sbatch request;
``bash slurm/schedule.sh --help`` lists its options):

* its own options (``--nodes``, ``--time``, ``--array``, ``--dry-run``, ...) pass
  through, as ``--opt=VALUE`` or ``--opt VALUE``;
* sbatch's short forms ``-N -t -p -A -C -J -c`` become the long ones;
* any other sbatch option (``--mem=64G``, ``--qos debug``, ``--exclusive``)
  becomes ``--sbatch-arg=...``, so it still reaches sbatch;
* the original's ``CHAIN=K`` environment variable becomes ``--chain=K``.

The original also copied the code to a login node over ssh (``RESUME`` and
``REUSE`` steered that); here the command runs where it is started, on a
Slurm login node (``ssh/schedule.sh`` runs commands on a remote machine).
Only the standard library is used, so any ``python3`` runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCHEDULE_SH = Path(__file__).resolve().parent / "schedule.sh"

# schedule.sh's options that take a value, and those that do not.
VALUE_OPTIONS = {
    "--nodes",
    "--ntasks-per-node",
    "--time",
    "--array",
    "--partition",
    "--account",
    "--constraint",
    "--gpus-per-node",
    "--cpus-per-task",
    "--signal-before",
    "--chain",
    "--run_dir",
    "--run-dir",
    "--job-name",
    "--sbatch-arg",
}
FLAG_OPTIONS = {"--dry-run", "--help", "-h"}
# sbatch's short options for schedule.sh's long ones.
SHORT_OPTIONS = {
    "-N": "--nodes",
    "-t": "--time",
    "-p": "--partition",
    "-A": "--account",
    "-C": "--constraint",
    "-J": "--job-name",
    "-c": "--cpus-per-task",
}


def normalise(args: list[str], environ=os.environ) -> list[str]:
    """schedule.sh's arguments for the original schedule.py's ``args`` (``[OPTIONS] -- COMMAND``)."""
    if "--" in args:
        split = args.index("--")
        options, command = args[:split], args[split:]
    else:  # schedule.sh explains that the command goes after --
        options, command = args, []
    out: list[str] = []
    i = 0
    while i < len(options):
        word = options[i]
        name, has_value, value = word.partition("=")
        if name in SHORT_OPTIONS:
            name = SHORT_OPTIONS[name]
        elif name.startswith("-") and not name.startswith("--") and len(name) > 2 and name[:2] in SHORT_OPTIONS:
            name, has_value, value = SHORT_OPTIONS[name[:2]], "=", name[2:]  # -N4, -t04:00:00
        if name in FLAG_OPTIONS and not has_value:
            out.append(name)
            i += 1
            continue
        if not has_value and i + 1 < len(options) and (name in VALUE_OPTIONS or not options[i + 1].startswith("-")):
            value, has_value = options[i + 1], "="
            i += 1
        i += 1
        if name in VALUE_OPTIONS:
            out.append(f"{name}={value}" if has_value else name)  # schedule.sh names a missing value
        elif name.startswith("-"):
            out.append(f"--sbatch-arg={name}={value}" if has_value else f"--sbatch-arg={name}")
        else:
            out.append(word)  # schedule.sh explains that the command goes after --
    chain = environ.get("CHAIN", "").strip()
    if chain and not any(word.startswith("--chain") for word in out):
        out.append(f"--chain={chain}")
    return out + command


def main(argv: list[str] | None = None) -> int:
    args = normalise(sys.argv[1:] if argv is None else argv)
    os.execvp("bash", ["bash", str(SCHEDULE_SH), *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
