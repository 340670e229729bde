"""Throughput of one ES generation's slice evaluation, fast path against the literal paper version.

    python3 bench/throughput.py                  # every section (~25 min on a 2-core CPU)
    python3 bench/throughput.py --quick          # seconds; checks the benchmark itself
    python3 bench/throughput.py --json out.json  # also write every figure as JSON

Each case runs in a fresh subprocess (so XLA flags, compile time and peak
memory belong to that case alone) and times exactly what a run times:
``EvolutionStrategy.evaluate`` built by ``experiment.make_outer_loop`` from a
config — noise, episode sampling on the device, the learner and the loss in
one jitted call — on the offline 28×28 ``mnist_offline`` data, so the VSML
model is the paper's: dense 784→10, message 8, state 16, 2 micro ticks.

The unit is the *synapse update*: one sub-LSTM step of one synapse of one
population member, so a generation does ``2 · pairs · T · batch · 784·10 · 2``.
The literal version (:mod:`vsml.learners.vsml_reference`: concatenated
messages, full LSTM and both heads per synapse and tick, then the mean) runs
the same population and episodes, and the fitness values of the two are
compared. Figures are medians over ``--repeats`` timed calls after a warm-up
call (the warm-up minus the median is the compile time). The roofline of
``bench/machine.py`` is printed first (ceilings from rates measured here) and
after the ladder and the grid with the best rate's fraction of each ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTOR_512 = "--xla_cpu_prefer_vector_width=512"


# --------------------------------------------------------------------------- one case (subprocess)


def case_config(case: dict) -> dict:
    from vsml.config import build_config  # noqa: PLC0415

    overrides = [
        f"training.dataset={case.get('dataset', 'mnist_offline')}",
        f"training.population_size={case['pairs']}",
        f"training.episode_length={case['length']}",
        f"training.batch_size={case.get('batch', 1)}",
        f"training.pairs_per_chunk={json.dumps(case.get('chunk'))}",
        *([f"model.type={case['model']}"] if case.get("model") else []),  # else default.yaml's learner
        "logging.wandb=disabled",
    ]
    return build_config([], overrides + list(case.get("config", [])))


def build_learner_for(case: dict, settings, task):
    """The case's learner from the registry (with its run options) and its spec."""
    from vsml.learners import learner_type  # noqa: PLC0415

    kind = learner_type(settings.model.type)
    spec = kind.spec_from_config(settings.model, task.spec.input_shape, task.spec.num_classes)
    options = {"unroll": int(case.get("unroll", 1)), "implementation": case.get("impl", "fast")}
    return kind.bind(spec, **{name: value for name, value in options.items() if name in kind.run_options}), spec


def run_case(case: dict) -> dict:
    """Times ``repeats`` slice evaluations of one configuration; returns the figures as a dict."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from bench import machine  # noqa: PLC0415
    from vsml.comm import SingleProcessComm  # noqa: PLC0415
    from vsml.config import resolve_for_rank  # noqa: PLC0415
    from vsml.evaluation import load_task  # noqa: PLC0415
    from vsml.experiment import make_outer_loop  # noqa: PLC0415
    from vsml.learners import vsml  # noqa: PLC0415 — synapse counts of VSML cases
    from vsml.settings import run_settings  # noqa: PLC0415

    if case.get("cache_dir"):
        jax.config.update("jax_compilation_cache_dir", case["cache_dir"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    settings = run_settings(resolve_for_rank(case_config(case), 0))
    training = settings.training
    task = load_task(
        training.dataset, "train", settings.data_settings, training.episode_length, training.batch_size, training=True
    )
    learner, spec = build_learner_for(case, settings, task)
    params = learner.init(jax.random.PRNGKey(0))
    outer_loop = make_outer_loop(learner, task, settings, params, SingleProcessComm())
    state = outer_loop.init(params, seed=0)
    rss_before = machine.cpu_peak_rss_bytes()

    start = time.perf_counter()
    fitness = outer_loop.evaluate(state, task.arrays)
    first = time.perf_counter() - start
    times = []
    for _ in range(case.get("repeats", 3)):
        start = time.perf_counter()
        outer_loop.evaluate(state, task.arrays)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)

    result = {
        **case,
        "generation_s": seconds,
        "min_s": min(times),
        "compile_s": max(first - seconds, 0.0),
        "fitness": np.asarray(fitness, dtype=np.float64).ravel().tolist(),
        "peak_rss_bytes": machine.cpu_peak_rss_bytes(),
        "rss_before_bytes": rss_before,
        "device_peak_bytes": machine.device_peak_bytes(),
        "chosen_chunk": outer_loop.pairs_per_chunk,
        # XLA's plan of one pair (what `auto` divides its budget by), outside the timed calls
        "bytes_per_pair": (
            outer_loop.working_bytes_per_item(params, task.arrays) if case.get("chunk") == "auto" else None
        ),
        "member_steps_per_s": 2 * case["pairs"] * case["length"] * case.get("batch", 1) / seconds,
    }
    if case.get("memory_analysis"):
        result["xla_temp_bytes"] = int(outer_loop.memory_analysis(state, task.arrays).temp_size_in_bytes)
    if isinstance(spec, vsml.VSMLSpec) and not spec.conv_layers:
        geometries = vsml.layer_geometries(spec, task.spec.input_shape, task.spec.num_classes)
        synapses = sum(int(np.prod(g.synapses)) for g in geometries)
        updates = 2 * case["pairs"] * case["length"] * case.get("batch", 1) * synapses * spec.num_micro_ticks
        result.update(
            synapses=synapses, synapse_updates=updates, updates_per_s=updates / seconds, slow_size=spec.slow_size
        )
    return result


# --------------------------------------------------------------------------- the table (parent)


def case_environ(xla_flags: str) -> dict:
    """The environment of a case: ``XLA_FLAGS`` = the user's + the project's correctness flags + ``xla_flags``.

    The vector width is the case's choice (the ladder compares XLA's default with 512 bits).
    """
    from vsml.runtime import project_xla_flags  # noqa: PLC0415 — after main() put ROOT on sys.path

    base = project_xla_flags(os.environ.get("XLA_FLAGS", ""), wide_vectors=False)
    return {**os.environ, "XLA_FLAGS": f"{base} {xla_flags}".strip(), "PYTHONPATH": child_python_path()}


def child_python_path() -> str:
    """``PYTHONPATH`` of a child process: ROOT first, the caller's kept (packages installed with ``pip --target``)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def spawn(case: dict, xla_flags: str = "", timeout: float = 1800) -> dict:
    """Runs one case in a fresh interpreter with ``XLA_FLAGS`` (and the case's ``env``) set; returns its figures."""
    env = {**case_environ(xla_flags), **case.get("env", {})}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), "--case", json.dumps(case)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case {case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "xla_flags": xla_flags}


def peaks_and_traffic(scale: float) -> dict:
    """The measured rates and what XLA's compiled dense layer moves per update (4 members: a CPU chunk of 2 pairs)."""
    from bench import machine  # noqa: PLC0415

    return {"peaks": machine.measure_peaks(scale=scale), "traffic": machine.xla_layer_traffic(4 if scale >= 1 else 1)}


def spawn_peaks(scale: float, xla_flags: str) -> dict:
    env = case_environ(xla_flags)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), "--peaks", str(scale)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # peaks_and_traffic


def fmt_rate(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def fmt_mib(value) -> str:
    return "-" if not value else f"{value / 2**20:.0f}"


def max_abs_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a["fitness"], b["fitness"]))


def table(rows, columns) -> str:
    widths = [max(len(name), *(len(str(r[i])) for r in rows)) for i, name in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def plan(args, vector_flags: str) -> dict:
    """The cases of each section, as ``{section: [(case, xla_flags), ...]}``."""
    r = args.repeats
    if args.quick:
        small = {"repeats": 1, "config": ["model.sub_rnn.slow_size=4", "model.sub_rnn.msg_size=4"]}
        return {
            "ladder": [
                ({"impl": "literal", "pairs": 2, "length": 5, **small}, ""),
                ({"impl": "fast", "pairs": 2, "length": 5, **small}, ""),
                ({"impl": "fast", "pairs": 2, "length": 5, "chunk": 1, **small}, vector_flags),
            ],
            "grid": [
                ({"impl": impl, "pairs": p, "length": 5, **small}, vector_flags)
                for p in (1, 2)
                for impl in ("fast", "literal")
            ],
            "baselines": [({"model": "SGD", "pairs": 2, "length": 5, "repeats": 1}, vector_flags)],
            "memory": [
                ({"impl": "fast", "pairs": 4, "length": 5, "chunk": c, "memory_analysis": True, **small}, vector_flags)
                for c in (None, 1)
            ],
            "cache": [],
        }
    chunk = args.chunk or None
    best = {"impl": "fast", "chunk": chunk, "unroll": args.unroll}
    return {
        # What each step buys at the target point (16 pairs, T = 100).
        "ladder": [
            ({"impl": "literal", "pairs": 16, "length": 100, "repeats": r}, ""),
            ({"impl": "literal", "pairs": 16, "length": 100, "repeats": r}, vector_flags),
            ({"impl": "fast", "pairs": 16, "length": 100, "repeats": r}, ""),
            ({"impl": "fast", "pairs": 16, "length": 100, "repeats": r, "unroll": 2}, ""),
            *[({"impl": "fast", "pairs": 16, "length": 100, "repeats": r, "chunk": c}, "") for c in (1, 2, 4)],
            *[
                ({"impl": "fast", "pairs": 16, "length": 100, "repeats": r, "chunk": c}, vector_flags)
                for c in (None, 1, 2, 4, "auto")
            ],
            ({"impl": "fast", "pairs": 16, "length": 100, "repeats": r, "chunk": chunk, "unroll": 2}, vector_flags),
        ],
        # Pair slices and episode lengths, best settings against the literal version.
        "grid": [
            ({**best, "impl": impl, "pairs": p, "length": t, "repeats": r}, flags)
            for p, t in ((1, 100), (4, 100), (16, 100), (64, 100), (4, 500), (4, 2000))
            for impl, flags in (("fast", vector_flags), ("literal", vector_flags))
            if not (impl == "literal" and t > 500)
        ],
        "baselines": [
            ({"model": m, "pairs": 16, "length": 100, "repeats": r, "chunk": chunk}, vector_flags)
            for m in ("MetaRNN", "HebbianFW", "FWP", "FWMemory", "SGD", "NodePert")
        ],
        # Peak memory against the chunk size at a 64-pair slice.
        "memory": [
            ({**best, "pairs": p, "length": 100, "repeats": 1, "chunk": c, "memory_analysis": True}, vector_flags)
            for p, c in ((16, None), (64, None), (64, 16), (64, 4), (64, 1), (16, 1))
        ],
        "cache": [{**best, "pairs": 16, "length": 100, "repeats": 1}],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--peaks", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs (seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (median reported)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=2,
        help="training.pairs_per_chunk of the best settings (0: null, the whole slice; use on a GPU)",
    )
    parser.add_argument("--unroll", type=int, default=1, help="scan unroll of the best settings")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--sections", nargs="+", default=["ladder", "grid", "baselines", "memory", "cache"])
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0
    if args.peaks:
        print(json.dumps(peaks_and_traffic(args.peaks)))
        return 0

    sys.path.insert(0, str(ROOT))
    from bench import machine  # noqa: PLC0415

    info = machine.describe()
    vector_flags = VECTOR_512 if info["backend"] == "cpu" and info["cpu_vector_isa"] == "avx512" else ""
    measured = spawn_peaks(0.01 if args.quick else 1.0, vector_flags)  # with the flags of the best settings
    peaks, traffic = measured["peaks"], measured["traffic"]
    cost = machine.update_cost(4 if args.quick else 16, 4 if args.quick else 8)

    def ceilings(rate=None):
        return machine.roofline(peaks, cost, traffic["bytes_per_update"], rate)

    print(f"machine: {machine.summary_line(info)}")
    print(f"XLA flags of the best settings: {case_environ(vector_flags)['XLA_FLAGS'] or '(none)'}")
    print(
        f"XLA's compiled dense layer (paper model, {traffic['members']} members): "
        f"{traffic['bytes_per_update']:.0f} B accessed, {traffic['flops_per_update']:.0f} FLOPs and "
        f"{traffic['transcendentals_per_update']:.0f} transcendentals per synapse update"
    )
    print("roofline of a synapse update (ceilings in updates/s from rates measured here):")
    print(machine.roofline_table(ceilings()) + "\n")
    report = {"machine": info, "peaks": peaks, "traffic": traffic, "sections": {}}

    def print_roofline_at(results, what):
        fast = [r for r in results if r.get("impl") == "fast" and "updates_per_s" in r]
        if fast:
            best = max(fast, key=lambda r: r["updates_per_s"])
            rows = ceilings(best["updates_per_s"])
            report["sections"][f"{what}_roofline"] = {"case": describe_case(best), "rows": rows}
            print(f"\nroofline at the best {what} rate ({describe_case(best)}):")
            print(machine.roofline_table(rows))
            closest = machine.binding(rows)
            print(f"closest ceiling not exceeded: {closest['ceiling'] if closest else 'none'}")

    sections = plan(args, vector_flags)

    def run_section(name, cases):
        results = []
        for case, flags in cases:
            result = spawn(case, flags)
            results.append(result)
            print(
                f"  [{name}] {describe_case(result)}: {result['generation_s']:.3f} s/gen"
                + (f", {result['updates_per_s']:.3g} updates/s" if "updates_per_s" in result else ""),
                flush=True,
            )
        report["sections"][name] = results
        return results

    if "ladder" in args.sections:
        ladder = run_section("ladder", sections["ladder"])
        base = ladder[0]
        rows = [
            [
                describe_case(r),
                f"{r['generation_s']:.3f}",
                fmt_rate(r.get("updates_per_s")),
                f"{r['updates_per_s'] / base['updates_per_s']:.2f}x",
                f"{r['compile_s']:.1f}",
                f"{max_abs_diff(r, base):.1e}",
            ]
            for r in ladder
        ]
        print("\nWhat each step buys (16 pairs, episode 100, batch 1):")
        print(
            table(
                rows,
                [
                    "variant",
                    "s/gen",
                    "updates/s",
                    "vs literal",
                    "compile s",
                    "max |fitness - literal|",
                ],
            )
        )
        print_roofline_at(ladder, "ladder")
    if "grid" in args.sections:
        grid = run_section("grid", sections["grid"])
        literal = {(r["pairs"], r["length"]): r for r in grid if r.get("impl") == "literal"}
        rows = []
        for r in grid:
            if r.get("impl") != "fast":
                continue
            ref = literal.get((r["pairs"], r["length"]))
            rows.append(
                [
                    r["pairs"],
                    r["length"],
                    f"{r['generation_s']:.3f}",
                    fmt_rate(r["updates_per_s"]),
                    f"{r['updates_per_s'] / ref['updates_per_s']:.2f}x" if ref else "-",
                    f"{max_abs_diff(r, ref):.1e}" if ref else "-",
                    f"{r['compile_s']:.1f}",
                    fmt_mib(r["peak_rss_bytes"]),
                    fmt_mib(r["device_peak_bytes"]),
                ]
            )
        print("\nFast path (best settings) by slice and episode length:")
        print(
            table(
                rows,
                [
                    "pairs",
                    "T",
                    "s/gen",
                    "updates/s",
                    "vs literal",
                    "max |fitness diff|",
                    "compile s",
                    "peak RSS MiB",
                    "device peak MiB",
                ],
            )
        )
        print_roofline_at(grid, "grid")
    if "baselines" in args.sections:
        baselines = run_section("baselines", sections["baselines"])
        rows = [
            [
                r["model"],
                f"{r['generation_s']:.3f}",
                f"{r['member_steps_per_s']:.3g}",
                f"{r['compile_s']:.1f}",
                fmt_mib(r["peak_rss_bytes"]),
            ]
            for r in baselines
        ]
        print("\nBaselines (16 pairs, episode 100, batch 1, 28x28x1 -> 10 classes):")
        print(table(rows, ["model", "s/gen", "member-steps/s", "compile s", "peak RSS MiB"]))
    if "memory" in args.sections:
        memory = run_section("memory", sections["memory"])
        rows = [
            [
                r["pairs"],
                r.get("chunk") or "whole slice",
                fmt_mib(r["xla_temp_bytes"]),
                fmt_mib(r["peak_rss_bytes"] - r["rss_before_bytes"]),
                fmt_mib(r["device_peak_bytes"]),
                f"{r['generation_s']:.3f}",
            ]
            for r in memory
        ]
        print(
            "\nMemory of a slice by pairs_per_chunk (XLA's working buffers of the evaluation; RSS growth "
            "during compile + evaluation):"
        )
        print(table(rows, ["pairs", "pairs_per_chunk", "XLA temp MiB", "extra RSS MiB", "device peak MiB", "s/gen"]))
    if "cache" in args.sections and sections["cache"]:
        with tempfile.TemporaryDirectory() as cache_dir:
            case = {**sections["cache"][0], "cache_dir": cache_dir}
            cold = spawn(case, vector_flags)
            warm = spawn(case, vector_flags)
        report["sections"]["cache"] = [cold, warm]
        print(
            f"\nPersistent compilation cache: compile {cold['compile_s']:.2f} s cold, "
            f"{warm['compile_s']:.2f} s from the cache"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def describe_case(r: dict) -> str:
    parts = [r["model"] if r.get("model") else r.get("impl", "fast")]
    if r.get("impl") == "literal":
        parts = ["literal"]
    parts.append(f"{r['pairs']}p T{r['length']}")
    if r.get("chunk") == "auto":
        parts.append(f"chunk auto (= {r.get('chosen_chunk') or 'whole slice'})")
    elif r.get("chunk"):
        parts.append(f"chunk {r['chunk']}")
    if r.get("unroll", 1) != 1:
        parts.append(f"unroll {r['unroll']}")
    if r.get("xla_flags"):
        parts.append("vec512")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
