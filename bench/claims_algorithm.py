"""Meta-testing a given algorithm with ``bench/claims.py --algorithm`` (no meta-training), and its verdict.

``--algorithm pretrained:NAME`` (a shipped algorithm), a run directory or a checkpoint ``.npz``:
the algorithm is meta-tested on every meta-test set of the matrix (plus MNIST at 28x28) beside the
hand-designed rules, one episode draw per seed (``bench/claims_metatest.py``), and the report
ends with issue 29's verdict for a general algorithm (:func:`verdict`):

* it beats online SGD and Adam — each at its best learning rate chosen on the set itself — in
  episode-mean accuracy on at least half of the meta-test sets it never saw, and
* it reaches at least 70 % last-quarter accuracy on MNIST at 28x28 (unseen).

A set is *seen* when the dataset it is drawn from (``claims_matrix.SEEN_AS``) is one the
algorithm meta-trained on (``training.dataset``, the datasets of a ``mixture``, of an
``mpi_split``); a transformed input distribution (a projection, permuted or inverted pixels, a
generated table) counts as unseen. ``--seen`` names more sets to count as seen.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.claims_matrix import SEEN_AS  # noqa: E402

GROUP = "algorithm"  # the worker group of --algorithm (bench/claims_metatest.py)
FOLDER = "algorithm"  # OUT/algorithm/<label>/: its report, figures and seed<S>/metatest.json per episode draw
PREFIX = "pretrained:"
TARGET_STEPS = 100  # the targets are about 100-step episodes
MNIST28 = "mnist28"
MNIST28_TARGET = 0.70  # last-quarter accuracy
RIVALS = ("SGD", "Adam")


def problem(spec: str) -> str | None:
    """One line saying why ``--algorithm spec`` cannot be meta-tested, or None (checked before any work)."""
    from vsml import api  # noqa: PLC0415

    if spec.startswith(PREFIX):
        names = api.pretrained_names()
        name = spec.removeprefix(PREFIX)
        return None if name in names else f"--algorithm: no shipped algorithm {name!r}; one of {', '.join(names)}"
    path = Path(spec)
    if path.is_dir() and not (path / "checkpoint.npz").exists():
        return f"--algorithm: run directory '{spec}' has no checkpoint.npz; give a finished run or a checkpoint file"
    if not path.exists():
        return f"--algorithm: '{spec}' is neither pretrained:NAME nor an existing run directory or checkpoint file"
    return None


def load(spec: str):
    """The :class:`vsml.api.LearnedAlgorithm` of ``spec``."""
    from vsml import api  # noqa: PLC0415

    return api.pretrained(spec.removeprefix(PREFIX)) if spec.startswith(PREFIX) else api.load(spec)


def label(spec: str) -> str:
    """The algorithm's row name: the shipped name, or the run directory's / checkpoint file's name."""
    if spec.startswith(PREFIX):
        return spec.removeprefix(PREFIX)
    path = Path(spec).resolve()
    return path.name if path.is_dir() else path.stem


def folder(args) -> Path:
    """``OUT/algorithm/<label>``: one per algorithm, so several share one OUT and its hand-designed results."""
    return Path(args.out) / FOLDER / label(args.algorithm)


def meta_trained_on(config: dict) -> list[str]:
    """The dataset names a run's config meta-trains on (``training.dataset``, a mixture's, an ``mpi_split``'s)."""

    def names(value) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [n for v in value.values() for n in names(v)]
        if isinstance(value, list | tuple):
            return [n for v in value for n in names(v)]
        return []

    found = names(config["training"]["dataset"])
    if "mixture" in found:
        found = [n for n in found if n != "mixture"] + names(config.get("data", {}).get("mixture", {}).get("datasets"))
    return list(dict.fromkeys(found))


def describe(spec: str, algorithm) -> dict:
    """What a ``metatest.json`` of the algorithm records beside its results."""
    import jax  # noqa: PLC0415

    trained_on = meta_trained_on(algorithm.config)
    return {
        "learner": label(spec),
        "algorithm": spec,
        "train_set": "+".join(trained_on),
        "meta_trained_on": trained_on,
        "model": algorithm.config["model"]["type"],
        "generation": int(algorithm.step),
        "meta_params": int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(algorithm.params))),
    }


def unseen_sets(test_sets: list[str], trained_on: list[str], also_seen: list[str] = ()) -> list[str]:
    """The meta-test sets the algorithm never saw (see the module docstring)."""
    return [t for t in test_sets if t not in also_seen and (SEEN_AS.get(t) is None or SEEN_AS[t] not in trained_on)]


def verdict(algorithm_row: dict, rivals: dict[str, dict], unseen: list[str], steps: int) -> dict:
    """Issue 29's targets from report rows (``row["results"][set][figure]["median"]``, medians over seeds).

    ``rivals``: the SGD and Adam rows (each set at its best rate). A set counts as beaten when the
    algorithm's median episode-mean accuracy is above both rivals' there.
    """
    per_set = {}
    for test_set in unseen:
        ours = algorithm_row["results"].get(test_set)
        if ours is None:
            continue
        theirs = {name: row["results"][test_set]["episode_mean"]["median"] for name, row in rivals.items()}
        mean = ours["episode_mean"]["median"]
        per_set[test_set] = {"algorithm": mean, **theirs, "beats": all(mean > v for v in theirs.values())}
    wins = sum(v["beats"] for v in per_set.values())
    needed = math.ceil(len(per_set) / 2)
    mnist = algorithm_row["results"].get(MNIST28)
    last_quarter = mnist["last_quarter"]["median"] if mnist else None
    return {
        "steps": steps,
        "unseen": list(per_set),
        "per_set": per_set,
        "wins": wins,
        "needed": needed,
        "beats_target": bool(per_set) and wins >= needed and set(rivals) == set(RIVALS),
        "mnist28_unseen": MNIST28 in unseen,
        "mnist28_last_quarter": last_quarter,
        "mnist28_target": last_quarter is not None and MNIST28 in unseen and last_quarter >= MNIST28_TARGET,
    }


def verdict_markdown(found: dict, name: str) -> str:
    """The verdict as report lines (accuracies in %)."""

    def yes(flag: bool) -> str:
        return "**reached**" if flag else "**not reached**"

    lines = [
        "",
        f"**Verdict for {name}** (issue 29's targets for a general algorithm; medians over episode draws)",
        "",
    ]
    if found["steps"] != TARGET_STEPS:
        lines += [f"(Episodes of {found['steps']} steps here; the targets are about {TARGET_STEPS}.)", ""]
    lines += ["| unseen set | " + name + " | " + " | ".join(RIVALS) + " | beats both |", "|---|---|---|---|---|"]
    for test_set, v in found["per_set"].items():
        rivals = " | ".join(f"{100 * v[r]:.1f}" if r in v else "–" for r in RIVALS)
        lines.append(f"| {test_set} | {100 * v['algorithm']:.1f} | {rivals} | {'yes' if v['beats'] else 'no'} |")
    last = found["mnist28_last_quarter"]
    lines += [
        "",
        f"- Beats tuned SGD and Adam on at least half of the unseen sets (episode mean): {yes(found['beats_target'])} "
        f"— {found['wins']} of {len(found['unseen'])} (needed {found['needed']}).",
        f"- At least {100 * MNIST28_TARGET:.0f} % last-quarter accuracy on unseen 28x28 MNIST: "
        + (
            f"{yes(found['mnist28_target'])} — {100 * last:.1f} %"
            + ("" if found["mnist28_unseen"] else " (but MNIST was among its meta-training sets: not unseen)")
            if last is not None
            else "**not measured** (the algorithm does not run on 28x28 inputs)"
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"
