"""The paper's claims, measured: learned learners meta-trained on one set, meta-tested on many.

    python3 bench/claims.py --out runs/claims --jobs 2            # the CPU matrix (~80 min on 2 cores)
    python3 bench/claims.py --quick --out /tmp/claims             # the whole pipeline in about a minute
    python3 bench/claims.py --out runs/claims --report-only       # rebuild the report from what exists
    python3 bench/claims.py --scale paper --out runs/claims-paper --sweep-only   # write the sweep file only
    bash slurm/schedule.sh --array=1-48 --nodes=32 -- python3 launch.py --array runs/claims-paper/sweep.yaml
    python3 bench/claims.py --out runs/claims-outer --scale outer --learners VSML-quickstart MetaRNN-lr0.025 \
        --outer-loops es metagrad --hand-designed      # ES against meta-gradients (~50 min on 2 cores)
    python3 bench/claims.py --algorithm pretrained:vsml-digits --out runs/metatest-digits   # a given algorithm

Kirsch & Schmidhuber (2021), Sections 4.2 and 4.4, Figures 6 and 8, make three
claims this script measures:

1. VSML meta-trained on one dataset keeps learning on datasets it never saw,
   where a Meta RNN and fast-weight memory overfit their meta-training set;
2. meta-training on augmented tasks (random projections) widens that;
3. the learned algorithm learns by fast association: accuracy on a class rises
   after its first few labelled examples, unlike SGD.

The matrix: every learner of :data:`LEARNERS` (the same ES settings and budget:
generations x pairs x episode length) meta-trained on every set of
:data:`TRAIN_SETS`, ``--seeds`` seeds each. Every cell is one ``launch.py``
process writing a normal run directory ``OUT/runs/<cell>/train``; the same
tasks are written to ``OUT/sweep.yaml`` (``launch.py --array`` /
``slurm/schedule.sh --array``; each task's ``logging.dir`` is its cell folder, so
a cluster's runs land where ``--report-only`` finds them). Then every result is
meta-tested on every set of :data:`META_TEST_SETS` (one process per learner,
all its cells), as are the hand-designed references (online SGD and Adam over a
small learning-rate grid, the best rate per meta-test set reported; no
meta-training) on the same episodes. Every dataset is presented at one common
size so that the fixed-size learners fit all of them: 14x14x1 inputs (bilinear
resize; 8x8 ``digits`` are enlarged) and 10 output units (``pad.output``).

The outer loop is an axis too (``--outer-loops es metagrad``; :mod:`bench.claims_outer`): a
learner ``NAME+metagrad`` is ``NAME`` meta-trained by meta-gradients (``configs/backprop.yaml``) on
ES's budget, meta-tested at equal episodes and at equal wall-clock, and the report sets the two
outer loops side by side.

The tabular sets (scikit-learn's ``iris`` and a ``make_classification`` set with features on
mixed scales, :data:`bench.claims_matrix.TABULAR_TEST_SETS`) are meta-tested by the learners that
run on any input size and the hand-designed rules (online SGD, Adam, logistic regression, nearest
class mean), and reported in a block of their own.

``--algorithm`` meta-tests one given algorithm (``pretrained:NAME``, a run directory or a
checkpoint) instead of meta-training the matrix: on every meta-test set plus MNIST at 28x28,
beside the hand-designed rules, the seeds being episode draws; the report ends with issue 29's
verdict (:mod:`bench.claims_algorithm`).

Finished cells are skipped, a stopped cell resumes from its checkpoint
(``launch.py --resume``), and a cell's meta-test results (``metatest.json`` in
its folder) are kept, so a crash or a stop loses at most the generations since
a cell's last checkpoint. The report (``OUT/report.md``, ``OUT/*.png``) is
built from whatever run directories exist.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_algorithm, claims_outer  # noqa: E402
from bench.claims_matrix import (  # noqa: E402
    DEFAULT_LEARNERS,
    DEFAULT_TRAIN_SETS,
    HAND_DESIGNED,
    LEARNERS,
    TRAIN_SETS,
    cell_iterations,
    cell_name,
    cells,
    is_finished,
    run_dir_of,
    write_sweep,
)
from bench.claims_metatest import make_data_files, meta_test_group, write_json  # noqa: E402
from bench.claims_report import build_report  # noqa: E402

# ----------------------------------------------------------------------------- running cells


def train_cell(args, sweep: Path, task: int, cell: tuple[str, str, int]) -> dict:
    """Meta-trains one cell in its own ``launch.py`` process: new, resumed, or skipped when finished."""
    iterations = cell_iterations(args, cell[0])
    existing = run_dir_of(args, cell)
    folder = Path(args.out) / "runs" / cell_name(*cell)
    if is_finished(existing, iterations):
        return {"cell": cell_name(*cell), "status": "finished before", "run_dir": str(existing)}
    if existing is not None and (existing / "checkpoint.npz").exists():
        command = [sys.executable, str(ROOT / "launch.py"), "--resume", str(existing)]
        run_dir, status = existing, "resumed"
    else:
        if existing is not None:  # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(existing)
        run_dir, status = folder / "train", "trained"
        command = [sys.executable, str(ROOT / "launch.py"), "--array", str(sweep), "--task", str(task)]
        command += ["--run_dir", str(run_dir)]
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(folder / "train.log", "a") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        status = f"failed (exit {proc.returncode}, see {folder / 'train.log'})"
    return {"cell": cell_name(*cell), "status": status, "run_dir": str(run_dir), "wall_s": time.perf_counter() - start}


def meta_test_process(args, group: str, cell: str | None = None) -> dict:
    """Meta-tests every finished cell of one learner (or one hand-designed rule; one cell; the --algorithm)
    in its own process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--meta-test-group", group]
    command += ["--meta-test-cell", cell] if cell else []
    command += ["--seeds", *map(str, args.seeds), "--train-sets", *args.train_sets, "--learners", *args.learners]
    command += ["--quick"] if args.quick else ["--scale", args.scale]
    command += ["--metagrad-margin", str(args.metagrad_margin)]
    command += ["--algorithm", args.algorithm] if args.algorithm else []
    if args.generations is not None:
        command += ["--generations", str(args.generations)]
    log_path = Path(args.out) / (f"runs/{cell}/metatest.log" if cell else f"metatest-{group}.log")
    with open(log_path, "a") as log:
        proc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return {"group": group, "returncode": proc.returncode, "log": str(log_path)}


# ----------------------------------------------------------------------------- entry


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder: runs/, hand/, sweep.yaml, report.md, *.png")
    parser.add_argument("--scale", choices=["cpu", "paper", "outer"], default="cpu", help="budget (default cpu)")
    parser.add_argument("--quick", action="store_true", help="tiny models and budget: checks the pipeline")
    parser.add_argument("--generations", type=int, default=None, help="override the scale's ES generations")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 3 (--quick: 0 1)")
    names = claims_outer.with_outer_loops(list(LEARNERS), list(claims_outer.OUTER_LOOPS))
    parser.add_argument("--learners", nargs="+", choices=names, default=list(DEFAULT_LEARNERS))
    parser.add_argument(
        "--outer-loops",
        nargs="+",
        choices=claims_outer.OUTER_LOOPS,
        default=["es"],
        help="meta-train every learner with each (metagrad: configs/backprop.yaml, at ES's budget; "
        "a learner named NAME+metagrad is one too)",
    )
    parser.add_argument(
        "--metagrad-margin",
        type=float,
        default=1.0,
        help="meta-gradient runs take this times ES's episodes, so an equal-wall-clock step beyond "
        "equal episodes can be reached (default 1)",
    )
    parser.add_argument("--train-sets", nargs="+", choices=list(TRAIN_SETS), default=None)
    parser.add_argument(
        "--hand-designed",
        nargs="*",
        choices=list(HAND_DESIGNED),
        default=list(HAND_DESIGNED),
        help="hand-designed references to meta-test (default all; none: no references)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes at once (default 1)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: meta-test nothing unless --meta-test; report from the run directories there are",
    )
    parser.add_argument("--meta-test", action="store_true", help="with --report-only: meta-test finished cells first")
    parser.add_argument("--sweep-only", action="store_true", help="write OUT/sweep.yaml and stop")
    parser.add_argument(
        "--algorithm",
        default=None,
        help="meta-test this algorithm instead of meta-training the matrix: pretrained:NAME, a run directory or "
        "a checkpoint; the seeds are episode draws; the report ends with issue 29's verdict",
    )
    parser.add_argument(
        "--seen",
        nargs="*",
        default=[],
        help="with --algorithm: meta-test sets to count as seen besides those of its meta-training datasets",
    )
    parser.add_argument("--meta-test-group", default=None, help=argparse.SUPPRESS)  # the worker process
    parser.add_argument("--meta-test-cell", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2, 3]
    if args.train_sets is None:
        args.train_sets = list(DEFAULT_TRAIN_SETS["quick" if args.quick else args.scale])
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.metagrad_margin < 1:
        parser.error("--metagrad-margin must be >= 1 (meta-gradient runs reach at least ES's episodes)")
    args.learners = claims_outer.with_outer_loops(args.learners, args.outer_loops)
    if args.generations is not None and args.generations < 1:
        parser.error("--generations must be >= 1")
    if args.algorithm and (
        args.sweep_only or args.meta_test_group is None and claims_algorithm.problem(args.algorithm)
    ):
        parser.error(
            "--sweep-only has nothing to write with --algorithm"
            if args.sweep_only
            else claims_algorithm.problem(args.algorithm)
        )
    if args.algorithm and not args.algorithm.startswith(claims_algorithm.PREFIX):
        args.algorithm = str(Path(args.algorithm).resolve())  # one spelling for the files that record it
    unknown = [t for t in args.seen if t not in claims_algorithm.SEEN_AS]
    if unknown:
        parser.error(
            f"--seen: unknown meta-test set(s) {', '.join(unknown)}; one of {', '.join(claims_algorithm.SEEN_AS)}"
        )
    return args


def run_groups(args, pool, groups: list[str]) -> None:
    """Meta-tests each group in its own worker process (``--jobs`` at once), one line each."""
    for result in pool.map(lambda g: meta_test_process(args, g), groups):
        ok = "done" if result["returncode"] == 0 else f"failed (exit {result['returncode']})"
        print(f"meta-test {result['group']}: {ok}, log {result['log']}", flush=True)


def add_session_time(out: Path, seconds: float) -> float:
    """Appends this session's wall time to ``OUT/timing.json``; returns every session's sum."""
    timing = out / "timing.json"
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads(timing.read_text()) if timing.exists() else {"sessions_s": []}
    previous["sessions_s"].append(seconds)
    write_json(timing, previous)
    return sum(previous["sessions_s"])


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.meta_test_group:
        return meta_test_group(args, args.meta_test_group, args.meta_test_cell)
    start = time.perf_counter()
    status = {}
    if args.algorithm:  # no matrix: the hand-designed rules and the given algorithm, each in its process
        if not args.report_only:
            make_data_files(out)
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                run_groups(args, pool, [*args.hand_designed, claims_algorithm.GROUP])
            status["wall_s"] = add_session_time(claims_algorithm.folder(args), time.perf_counter() - start)
        return print_report(args, status)
    # Only a run that trains (or --sweep-only) writes the sweep file: a report over fewer seeds
    # must never shrink the task list a running matrix reads.
    sweep = write_sweep(args) if args.sweep_only or not args.report_only else None
    if args.sweep_only:
        print(f"wrote {sweep}")
        return 0
    if not args.report_only or args.meta_test:
        make_data_files(out)
        matrix = cells(args)

        def train_and_test(task: int) -> str:
            """One cell, start to end: meta-trained, then meta-tested at once (a stop keeps what is done)."""
            cell = matrix[task - 1]
            result = train_cell(args, sweep, task, cell)
            tested = meta_test_process(args, cell[0], cell_name(*cell))
            ok = "meta-tested" if tested["returncode"] == 0 else f"meta-test failed, see {tested['log']}"
            return f"{result['cell']}: {result['status']}, {ok} ({result['run_dir']})"

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            run_groups(args, pool, args.hand_designed)  # the hand-designed references first (minutes), then every cell
            if not args.report_only and not args.quick:
                for line in pool.map(train_and_test, range(1, len(matrix) + 1)):
                    print(line, flush=True)
            if not args.report_only and args.quick:  # every cell first, then one meta-test process per learner
                for result in pool.map(lambda n: train_cell(args, sweep, n, matrix[n - 1]), range(1, len(matrix) + 1)):
                    print(f"{result['cell']}: {result['status']} ({result['run_dir']})", flush=True)
            # --meta-test / --quick: whatever finished cells lack meta-test results, one process per learner
            run_groups(args, pool, args.learners)
        status["wall_s"] = add_session_time(out, time.perf_counter() - start)
    return print_report(args, status)


def print_report(args, status: dict) -> int:
    """Writes and prints the report (the wall time of every session so far, when not given)."""
    timing = (claims_algorithm.folder(args) if args.algorithm else Path(args.out)) / "timing.json"
    if "wall_s" not in status and timing.exists():
        status["wall_s"] = sum(json.loads(timing.read_text())["sessions_s"])
    report, figures = build_report(args, status)
    print(report.read_text())
    print("figures: " + ", ".join(map(str, figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
