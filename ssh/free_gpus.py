"""Pick free GPUs from ``gpustat --json`` output (read on stdin).

    ssh HOST gpustat --json | python3 ssh/free_gpus.py [--max-memory MIB]

Prints the indices of the free GPUs, comma-separated, on one line (an empty
line when none is free), and one line per busy GPU on stderr saying why. A GPU
is free when gpustat lists no process on it and at most ``--max-memory`` MiB of
its memory are in use (processes of other users may be hidden from gpustat,
their memory is not). Exit status 2 when the input is not gpustat's JSON.
Only the standard library is used, so any ``python3`` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_MAX_MEMORY_MIB = 500


def busy_reason(gpu: dict, max_memory_mib: float) -> str | None:
    """Why this gpustat GPU entry is busy, or None when it is free."""
    processes = gpu.get("processes") or []
    if processes:
        owners = sorted({str(p.get("username", "?")) for p in processes})
        return f"{len(processes)} process(es) of {', '.join(owners)}"
    used = gpu.get("memory.used")
    if used is not None and float(used) > max_memory_mib:
        return f"{used} MiB of memory in use"
    return None


def free_gpus(report: dict, max_memory_mib: float = DEFAULT_MAX_MEMORY_MIB) -> tuple[list[int], dict[int, str]]:
    """``(free indices, {busy index: reason})`` of a parsed ``gpustat --json`` report."""
    free, busy = [], {}
    for gpu in report["gpus"]:
        index = int(gpu["index"])
        reason = busy_reason(gpu, max_memory_mib)
        if reason is None:
            free.append(index)
        else:
            busy[index] = reason
    return sorted(free), busy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-memory",
        type=float,
        default=DEFAULT_MAX_MEMORY_MIB,
        metavar="MIB",
        help=f"most memory in use on a free GPU (default {DEFAULT_MAX_MEMORY_MIB} MiB)",
    )
    args = parser.parse_args(argv)
    text = sys.stdin.read()
    try:
        free, busy = free_gpus(json.loads(text), args.max_memory)
    except (ValueError, KeyError, TypeError) as err:
        print(f"free_gpus: error: not gpustat --json output ({err}): {text[:200]!r}", file=sys.stderr)
        return 2
    for index, reason in sorted(busy.items()):
        print(f"GPU {index} is busy: {reason}", file=sys.stderr)
    print(",".join(map(str, free)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
