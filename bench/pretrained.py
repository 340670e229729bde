"""Ship a meta-trained run as a pre-trained algorithm: ``vsml/pretrained/NAME.npz`` + its card.

    python3 bench/pretrained.py vsml-digits runs/RUN --commit a644f5a \\
        --command "python3 launch.py --config_files configs/quickstart_paper.yaml" \\
        --config_files configs/quickstart_paper.yaml \\
        --description "the paper's VSML model meta-trained on 8x8 digits" \\
        --datasets digits mnist_offline --unseen mnist_offline

Copies the run's latest checkpoint (meta-parameters, ES/Adam state, the full
configuration) into the package, meta-tests it now through the public API
(``vsml.api.load(...).evaluate``: ``--episodes`` fresh test-split episodes of
``--length`` steps per dataset, the run's own preprocessing) and writes
``NAME.yaml`` beside it: what it is, where its training data comes from and on
what terms, the command and commit that reproduce it, the machine, and per
dataset the online accuracy over the whole episode and over its last quarter:
the mean over episodes, and the 10th-90th percentile of the per-episode values
as the spread.
``--check NAME`` re-evaluates a shipped one and compares with its card.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from vsml import api, checkpoint, resources, runtime  # noqa: E402
from vsml.data import offline_source  # noqa: E402

EPISODES = 64
LENGTH = 100


def meta_test(algorithm, datasets, episodes: int, length: int) -> dict:
    """Per dataset: episode-mean and last-quarter online accuracy on the test split, with their spread."""
    results = {}
    for name in datasets:
        accuracy = algorithm.evaluate(name, episodes=episodes, length=length, subset="test")["accuracy"]
        per_episode = accuracy.mean(axis=1)  # [episodes]
        last_quarter = accuracy[:, -(length // 4) :].mean(axis=1)
        results[name] = {
            "accuracy": round(float(per_episode.mean()), 4),
            "accuracy_p10_p90": [round(float(v), 4) for v in np.percentile(per_episode, [10, 90])],
            "last_quarter_accuracy": round(float(last_quarter.mean()), 4),
            "last_quarter_p10_p90": [round(float(v), 4) for v in np.percentile(last_quarter, [10, 90])],
        }
    return results


def ship(args) -> None:
    source = checkpoint.resolve_path(args.run)
    saved = yaml.safe_load(str(checkpoint.load_arrays(source)["config"]))
    dataset = saved["training"]["dataset"]
    if dataset == "mixture":  # training.dataset: mixture draws from data.mixture.datasets
        dataset = {"mixture": list(saved["data"]["mixture"]["datasets"])}
    training_data = _training_data(dataset, source)  # before anything is copied or evaluated
    target = resources.PRETRAINED_DIR / f"{args.name}.npz"
    shutil.copyfile(source, target)
    algorithm = api.load(target)
    info = machine.describe()
    card = {
        "name": args.name,
        "description": args.description,
        "model": algorithm.config["model"]["type"],
        "meta_parameters": int(sum(np.size(leaf) for leaf in _leaves(algorithm.params))),
        "meta_trained_on": dataset,
        "training_data": training_data,
        "generations": int(algorithm.step),
        "reproduce": args.command,
        "config_files": list(args.config_files),  # layer these to evaluate or continue it from launch.py
        "commit": args.commit or _head_commit(),
        "made": datetime.date.today().isoformat(),
        "machine": machine.summary_line(info),
        "meta_test": {
            "episodes": args.episodes,
            "episode_length": args.length,
            "subset": "test",
            "unseen": list(args.unseen),
            "results": meta_test(algorithm, args.datasets, args.episodes, args.length),
        },
    }
    checkpoint.write_card(target.with_suffix(".yaml"), card)
    print(f"shipped {target} ({target.stat().st_size} bytes) and its card:")
    print(target.with_suffix(".yaml").read_text())


def check(args) -> int:
    algorithm = api.pretrained(args.check)
    tested = algorithm.card["meta_test"]
    now = meta_test(algorithm, list(tested["results"]), tested["episodes"], tested["episode_length"])
    differ = {name: (tested["results"][name], now[name]) for name in now if now[name] != tested["results"][name]}
    for name, (card, measured) in differ.items():
        print(f"{name}: card {card} != now {measured}")
    print("card matches" if not differ else f"{len(differ)} dataset(s) differ on this machine")
    return 1 if differ else 0


def _training_data(dataset, source) -> dict:
    """Where the meta-training examples come from and on what terms; per dataset under ``mpi_split``
    or a mixture (``{'mpi_split' | 'mixture': [names]}``)."""
    names = next(iter(dataset.values())) if isinstance(dataset, dict) else [dataset]
    unknown = [name for name in names if name not in offline_source.PROVENANCE]
    if unknown:
        sys.exit(f"{source}: meta-trained on {unknown}; add source and terms to vsml.data.offline_source.PROVENANCE")
    entries = {name: offline_source.PROVENANCE[name] for name in names}
    return entries[dataset] if isinstance(dataset, str) else entries


def _leaves(tree):
    import jax  # noqa: PLC0415

    return jax.tree_util.tree_leaves(tree)


def _head_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", nargs="?", help="the shipped name (vsml/pretrained/NAME.npz)")
    parser.add_argument("run", nargs="?", help="the run directory (or checkpoint) to ship")
    parser.add_argument("--command", help="the command that reproduces the run")
    parser.add_argument("--config_files", nargs="*", default=[], help="the configs that describe its model")
    parser.add_argument("--commit", help="the commit the run came from (default: HEAD)")
    parser.add_argument("--description", default="", help="one line: what it is")
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist_offline"], help="meta-test datasets")
    parser.add_argument("--unseen", nargs="*", default=[], help="which of --datasets it never saw in meta-training")
    parser.add_argument("--episodes", type=int, default=EPISODES)
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--check", metavar="NAME", help="re-evaluate a shipped algorithm and compare with its card")
    args = parser.parse_args(argv)
    runtime.apply_xla_flags()
    if args.check:
        return check(args)
    if not (args.name and args.run and args.command):
        parser.error("NAME, RUN and --command are needed to ship a run")
    ship(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
