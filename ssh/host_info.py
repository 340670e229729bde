#!/usr/bin/env python3
"""What a host would run: its code version and Python environment, for ssh/schedule.sh.

    python3 ssh/host_info.py --excludes                 # what rsync leaves out, one a line
    python3 ssh/host_info.py --list > MANIFEST          # the code files here (what rsync copies)
    python3 ssh/host_info.py --check < MANIFEST         # one JSON line about this folder
    python3 ssh/host_info.py --compare < REPORTS        # "NAME<TAB>JSON" lines: the checkout's, then each host's

``--check`` runs in the code folder on each host (ssh/schedule.sh activates the
folder's .venv first) and prints ``{"dir", "code", "missing", "python", "packages"}``:
the absolute folder, a SHA-256 over the manifest's files (names and contents; files
that are not in the manifest, such as stale copies rsync left, do not count), the
manifest's files this folder lacks, the interpreter's version, and the versions of the
packages every rank needs (``null`` where one is not installed). ssh/schedule.sh
compares these between the user's checkout and every host before anything starts.
Only the standard library is used (and no package is imported), so any ``python3``
runs it in well under a second.

``--compare`` reads the checkout's report and then each host's (the first host runs
MPI's launcher) and prints the first problem as one line (exit 1), or nothing (exit 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

# What ssh/schedule.sh does not copy (it reads this list with --excludes): history, environments,
# results and caches.
EXCLUDED = (".git", ".venv", "runs", "wandb", "__pycache__", ".pytest_cache", ".ruff_cache")
# Every rank imports these; across hosts their versions must agree (MPICH's launcher
# and its wire protocol differ between releases).
PACKAGES = ("jax", "jaxlib", "numpy", "mpi4py", "mpich")


def code_files(root: Path) -> list[str]:
    """The files under ``root`` that rsync copies, as sorted POSIX paths relative to it."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in EXCLUDED)
        for name in files:
            if name in EXCLUDED:  # a git worktree's .git is a file, which rsync's --exclude .git skips too
                continue
            path = Path(folder, name)
            if path.is_file():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def code_digest(root: Path, names: list[str]) -> tuple[str, list[str]]:
    """(SHA-256 over ``names`` and their contents under ``root``, the names that are missing)."""
    digest, missing = hashlib.sha256(), []
    for name in names:
        path = root / name
        digest.update(name.encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            missing.append(name)
        digest.update(b"\0")
    return digest.hexdigest(), missing


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def problem(reports: list[tuple[str, dict]], synced: bool = False) -> str | None:
    """The first reason the hosts cannot run this checkout's code as one job, or None.

    ``reports``: ``[("checkout", info), (host, info), ...]``, each ``info`` from ``--check``;
    ``synced``: the code was copied just before (so a difference means it changed meanwhile).
    """
    (_, local), hosts = reports[0], reports[1:]
    fix = "a file changed while it was copied: run it again" if synced else "sync it (drop --no-sync)"
    for host, info in hosts:
        where = f"{host}:{info['dir']}"
        if info["missing"]:
            return f"{where} lacks code files of this checkout (e.g. {info['missing'][0]}): {fix}"
        if info["code"] != local["code"]:
            return f"{where} holds another code version than this checkout: {fix}"
        absent = [name for name in ("jax", "jaxlib", "mpi4py", "mpich") if info["packages"].get(name) is None]
        if absent:
            return (
                f"{where}: its python3 (the folder's .venv, else the PATH's) lacks {', '.join(absent)}: "
                "add --install, or pip install -r requirements.txt there"
            )
    head, head_info = hosts[0]
    for host, info in hosts[1:]:
        if info["dir"] != head_info["dir"]:
            return (
                f"the code folder is {info['dir']} on {host} but {head_info['dir']} on {head}: MPICH starts "
                "every rank at the same path; give --remote-dir an absolute folder that exists on every host"
            )
        for name in ("python", *PACKAGES):
            mine = info["python"] if name == "python" else info["packages"].get(name)
            theirs = head_info["python"] if name == "python" else head_info["packages"].get(name)
            if mine != theirs:
                return (
                    f"{host} has {name} {mine} but {head} has {theirs}: the ranks of one job need the same "
                    "versions (reinstall the venvs from one requirements.txt, e.g. with --install)"
                )
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--excludes", action="store_true", help="print the folder names rsync leaves out")
    mode.add_argument("--list", action="store_true", help="print the code files of this folder, one a line")
    mode.add_argument("--check", action="store_true", help="read a manifest on stdin; print one JSON line")
    mode.add_argument("--compare", action="store_true", help="read NAME<TAB>JSON reports; print the first problem")
    parser.add_argument("--synced", action="store_true", help="with --compare: the code was copied just before")
    args = parser.parse_args(argv)
    root = Path.cwd()
    if args.compare:
        reports = []
        for line in sys.stdin.read().splitlines():
            name, _, text = line.partition("\t")
            reports.append((name, json.loads(text)))
        found = problem(reports, synced=args.synced)
        if found:
            print(found)
        return 1 if found else 0
    if args.excludes:
        print("\n".join(EXCLUDED))
        return 0
    if args.list:
        print("\n".join(code_files(root)))
        return 0
    names = [line for line in sys.stdin.read().splitlines() if line]
    code, missing = code_digest(root, names)
    info = {
        "dir": str(root),
        "code": code,
        "missing": missing[:5],
        "python": ".".join(map(str, sys.version_info[:2])),
        "packages": package_versions(),
    }
    print(json.dumps(info, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
