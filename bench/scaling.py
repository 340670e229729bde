"""Time per ES generation against MPI rank count, and the share spent communicating.

    python3 bench/scaling.py                       # ranks 1 and 2, then population 1024
    python3 bench/scaling.py --ranks 1 2 4 8       # on a bigger machine
    python3 bench/scaling.py --quick               # seconds; checks the benchmark itself

Each rank count runs ``mpiexec -n N -bind-to core`` over this file: every rank
is pinned to one core (so N ranks use N cores and XLA does not oversubscribe
them), builds the outer loop exactly as ``launch.py`` does and runs a few
generations of ``EvolutionStrategy.step`` on the paper's VSML model and
``mnist_offline``. The generation's own timers (``time/evaluate``,
``time/communicate``, ``time/update`` of the step statistics) are gathered to
rank 0; a generation lasts as long as its slowest rank.

* *Weak scaling*: a fixed number of pairs per rank, so ideal scaling keeps the
  time per generation flat as ranks are added.
* *Communication at population 1024* (the paper's): the fitness all-gather
  (2P floats) and the gradient all-reduce (D floats) timed on their own after a
  barrier (so waiting for a slower rank is not counted), and their share of the
  generation time at the default episode length, extrapolated from the
  per-rank throughput measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def worker(args) -> None:
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from vsml.comm import world  # noqa: PLC0415
    from vsml.config import build_config, resolve_for_rank  # noqa: PLC0415
    from vsml.evaluation import load_task  # noqa: PLC0415
    from vsml.experiment import make_outer_loop  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    comm = world()
    config = build_config(
        [],
        [
            "training.dataset=mnist_offline",
            f"training.population_size={args.population}",
            f"training.episode_length={args.length}",
            f"training.pairs_per_chunk={json.dumps(args.chunk)}",
            "logging.wandb=disabled",
            *args.config,
        ],
    )
    settings = run_settings(resolve_for_rank(config, comm.rank))
    training = settings.training
    task = load_task(
        training.dataset, "train", settings.data_settings, training.episode_length, training.batch_size, training=True
    )
    learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
    params = learner.init(jax.random.PRNGKey(0))
    outer_loop = make_outer_loop(learner, task, settings, params, comm)
    state = outer_loop.init(params, seed=0)
    state, _ = outer_loop.step(state, task.arrays)  # compile

    rows = []
    for _ in range(args.generations):
        comm.barrier()
        start = time.perf_counter()
        state, stats = outer_loop.step(state, task.arrays)
        rows.append({"wall": time.perf_counter() - start, **{k: v for k, v in stats.items() if k.startswith("time/")}})

    # The two collectives of a generation on their own, after a barrier.
    fitness = np.zeros((len(outer_loop.item_indices), 2))
    partial = np.zeros(outer_loop.dim, dtype=np.float64)
    collective = []
    for _ in range(args.comm_repeats):
        comm.barrier()
        start = time.perf_counter()
        comm.allgather(fitness)
        comm.allreduce_sum(partial)
        collective.append(time.perf_counter() - start)

    gathered = comm.gather_objects({"rows": rows, "collective": collective})
    if comm.is_root:
        per_generation = [max(rank["rows"][g]["wall"] for rank in gathered) for g in range(args.generations)]

        def median_of_max(key):
            return statistics.median(max(rank["rows"][g][key] for rank in gathered) for g in range(args.generations))

        evaluate = median_of_max("time/evaluate")
        print(
            json.dumps(
                {
                    "ranks": comm.size,
                    "population": args.population,
                    "pairs_per_rank": len(outer_loop.item_indices),
                    "length": args.length,
                    "dim": outer_loop.dim,
                    "generation_s": statistics.median(per_generation),
                    "evaluate_s": evaluate,
                    "communicate_s": median_of_max("time/communicate"),
                    "update_s": median_of_max("time/update"),
                    "collective_s": statistics.median(
                        max(rank["collective"][i] for rank in gathered) for i in range(args.comm_repeats)
                    ),
                    "member_steps_per_s_per_rank": 2 * len(outer_loop.item_indices) * args.length / evaluate,
                }
            )
        )


def spawn(ranks: int, extra: list[str], bind: str = "core", timeout: float = 3600) -> dict:
    from vsml.runtime import project_xla_flags  # noqa: PLC0415 — after main() put ROOT on sys.path

    command = [
        str(MPIEXEC),
        "-n",
        str(ranks),
        "-bind-to",
        bind,
        sys.executable,
        str(Path(__file__)),
        "--worker",
        *extra,
    ]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": project_xla_flags(os.environ.get("XLA_FLAGS", ""))},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs-per-rank", type=int, default=8, help="weak scaling: pairs each rank evaluates")
    parser.add_argument("--length", type=int, default=50, help="episode length of the weak-scaling runs")
    parser.add_argument("--population", type=int, default=1024, help="population of the communication run")
    parser.add_argument(
        "--default-length",
        type=int,
        default=500,
        help="episode length the communication share is extrapolated to (training.episode_length)",
    )
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--comm-repeats", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=2, help="training.pairs_per_chunk")
    parser.add_argument("--config", nargs="*", default=[], help="extra KEY=VALUE overrides for every run")
    parser.add_argument(
        "--bind",
        default="core",
        help="mpiexec -bind-to value: core (one core per rank) or none (ranks share all cores)",
    )
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    sys.path.insert(0, str(ROOT))
    from bench import machine  # noqa: PLC0415

    if args.quick:
        args.pairs_per_rank, args.length, args.population, args.generations = 1, 3, 8, 1
        args.comm_repeats, args.config = 3, ["model.sub_rnn.slow_size=4", "model.sub_rnn.msg_size=4", *args.config]
    common = [
        "--generations",
        str(args.generations),
        "--comm-repeats",
        str(args.comm_repeats),
        "--chunk",
        str(args.chunk),
        "--config",
        *args.config,
    ]
    print(f"machine: {machine.summary_line(machine.describe())}; mpiexec -bind-to {args.bind}\n", flush=True)

    weak = []
    for ranks in args.ranks:
        result = spawn(
            ranks, ["--population", str(args.pairs_per_rank * ranks), "--length", str(args.length), *common], args.bind
        )
        weak.append(result)
        print(f"  weak scaling: {ranks} rank(s): {result['generation_s']:.3f} s/gen", flush=True)
    base = weak[0]["generation_s"]
    rows = [
        [
            r["ranks"],
            r["pairs_per_rank"],
            r["ranks"] * r["pairs_per_rank"],
            f"{r['generation_s']:.3f}",
            f"{base / r['generation_s']:.0%}",
            f"{r['evaluate_s']:.3f}",
            f"{r['communicate_s'] * 1e3:.2f}",
            f"{r['update_s'] * 1e3:.1f}",
            f"{r['communicate_s'] / r['generation_s']:.2%}",
        ]
        for r in weak
    ]
    print(f"\nWeak scaling ({args.pairs_per_rank} pairs per rank, episode {args.length}):")
    print(
        _table(
            rows,
            [
                "ranks",
                "pairs/rank",
                "population",
                "s/gen",
                "efficiency",
                "evaluate s",
                "communicate ms",
                "update ms",
                "communicate share",
            ],
        )
    )

    comm_runs = []
    for ranks in args.ranks:
        if args.population % ranks:
            continue
        result = spawn(ranks, ["--population", str(args.population), "--length", "1", *common], args.bind)
        per_rank = next(r for r in weak if r["ranks"] == ranks)["member_steps_per_s_per_rank"]
        estimate = 2 * result["pairs_per_rank"] * args.default_length / per_rank + result["update_s"]
        result.update(estimated_generation_s=estimate, share=result["collective_s"] / estimate)
        comm_runs.append(result)
    rows = [
        [
            r["ranks"],
            r["population"],
            r["dim"],
            f"{r['collective_s'] * 1e3:.2f}",
            f"{r['update_s'] * 1e3:.1f}",
            f"{r['generation_s']:.3f}",
            f"{r['estimated_generation_s']:.1f}",
            f"{r['share']:.4%}",
        ]
        for r in comm_runs
    ]
    print(
        f"\nCommunication at population {args.population} (all-gather of {2 * args.population} floats + "
        f"all-reduce of D floats, after a barrier):"
    )
    print(
        _table(
            rows,
            [
                "ranks",
                "population",
                "D",
                "collectives ms",
                "update ms",
                "s/gen at T=1",
                f"est. s/gen at T={args.default_length}",
                "communication share",
            ],
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"weak": weak, "communication": comm_runs}, indent=1))
    return 0


def _table(rows, columns) -> str:
    from bench.throughput import table  # noqa: PLC0415

    return table(rows, columns)


if __name__ == "__main__":
    sys.exit(main())
