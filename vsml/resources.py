"""Files that ship with the package: the configs and the pre-trained learning algorithms.

Found the same way in a checkout (``configs/`` beside ``vsml/``), an editable
install, and an installed wheel (where ``configs/`` lives inside the package as
``vsml/configs``), so ``--config_files configs/quickstart.yaml`` and
``pretrained:NAME`` work from any working directory once the package is
installed. Standard library only, and reads no file: it only says where files are.
"""

from __future__ import annotations

import difflib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRETRAINED_DIR = PACKAGE_DIR / "pretrained"
PRETRAINED_SCHEME = "pretrained:"  # checkpoint.restore.path: pretrained:NAME


def configs_dir() -> Path:
    """The folder holding ``default.yaml`` and the shipped configs (and ``array/`` sweeps)."""
    inside = PACKAGE_DIR / "configs"  # an installed wheel
    return inside if inside.is_dir() else PACKAGE_DIR.parent / "configs"  # a checkout or an editable install


def in_checkout() -> bool:
    """Whether this package runs from a checkout (or an editable install of one), not an installed wheel.

    A wheel carries ``configs/`` inside the package and no requirements files, so its
    hints name the extras (``vsml[prepare]``) and the ``vsml`` command instead.
    """
    return not (PACKAGE_DIR / "configs").is_dir()


def shipped_configs() -> list[str]:
    """The shipped configs as ``--config_files`` takes them: ``configs/NAME.yaml`` (and ``configs/array/``)."""
    root = configs_dir()
    files = sorted(root.glob("*.yaml")) + sorted(root.glob("array/*.yaml"))
    return [f"configs/{file.relative_to(root).as_posix()}" for file in files]


def find_config_file(path) -> Path:
    """``path`` as given when it exists; else, for ``configs/NAME``, the shipped config of that name.

    So the README's ``--config_files configs/quickstart.yaml`` (and sweep files
    naming ``configs/pad.yaml``) work outside the repository too. A path found
    nowhere is returned unchanged, for the caller's "not found" line.
    """
    path = Path(path)
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] != "configs":
        return path
    shipped = configs_dir().joinpath(*path.parts[1:])
    return shipped if shipped.exists() else path


def pretrained_names() -> list[str]:
    """The names of the pre-trained learning algorithms shipped with the package, sorted."""
    return sorted(file.stem for file in PRETRAINED_DIR.glob("*.npz"))


def pretrained_file(name: str) -> Path:
    """The checkpoint of the shipped algorithm ``name``; ValueError (one line) for an unknown name."""
    file = PRETRAINED_DIR / f"{name}.npz"
    if name in pretrained_names():
        return file
    known = pretrained_names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"shipped: {', '.join(known) or 'none'}"
    raise ValueError(f"no pre-trained algorithm named '{name}'; {hint}")


def pretrained_card(name: str) -> Path:
    """The description of a shipped algorithm (how it was made, its results): ``NAME.yaml`` beside it."""
    return pretrained_file(name).with_suffix(".yaml")
