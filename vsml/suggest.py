""" "Did you mean …?": the known name closest to a mistyped one (difflib), for one-line errors.

Config keys, config and array file names and dataset names all use it, so a
typo gets the same kind of hint wherever it is made.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


def closest(word: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The name of ``known`` most like ``word`` (case ignored), or None when none is close enough."""
    by_folded: dict[str, str] = {}
    for name in known:
        by_folded.setdefault(str(name).casefold(), str(name))
    match = difflib.get_close_matches(str(word).casefold(), list(by_folded), n=1, cutoff=cutoff)
    return by_folded[match[0]] if match else None


def did_you_mean(word: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'NAME'?)`` for the closest known name, or ``''`` when none is close."""
    best = closest(word, known, cutoff)
    return f" (did you mean '{best}'?)" if best else ""


def _shown(path: Path) -> str:
    """``path`` as a person would type it here: relative to the working directory when inside it."""
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def similar_file(path, folders: Iterable = (), suffix: str = ".yaml") -> str | None:
    """The existing ``*suffix`` file most like the missing ``path``, in its own folder or in ``folders``.

    Names are compared without the suffix, so ``configs/quickstart`` and
    ``quickstart.yaml`` (run from the repository root) both find
    ``configs/quickstart.yaml``; on a tie the file's own folder wins.
    """
    path = Path(path)
    wanted = path.name.removesuffix(suffix).casefold()
    found = []  # (unlikeness, order, shown path)
    for order, folder in enumerate([path.parent, *map(Path, folders)]):
        if not folder.is_dir():
            continue
        stems = {entry.name.removesuffix(suffix): entry for entry in folder.glob(f"*{suffix}") if entry.is_file()}
        best = closest(wanted, sorted(stems))
        if best is not None:
            likeness = difflib.SequenceMatcher(None, wanted, best.casefold()).ratio()
            found.append((-likeness, order, _shown(stems[best])))
    return min(found)[2] if found else None
