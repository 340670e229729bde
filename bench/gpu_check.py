"""The whole GPU picture in one command: correctness, speed, memory and a projection.

    python3 bench/gpu_check.py                    # on a GPU machine; within 8 minutes on one H100
    python3 bench/gpu_check.py --smoke            # every section at tiny size, on a CPU (the test suite)
    python3 bench/gpu_check.py --budget 300 --markdown gpu.md

Prints the machine (GPU, driver, CUDA, jax) and then

(a) the fast path against the literal per-synapse version (:mod:`vsml.learners.vsml_reference`)
    on the same population: their fitness must agree to float tolerance;
(b) synapse updates/s of the paper's model (784→10, message 8, state 16, 2 micro ticks) for
    slices of 8–512 pairs and episodes of 100 and 500 steps, with the chunking
    ``training.pairs_per_chunk: auto`` picks, XLA's working memory per pair and compile time;
(c) the roofline, measured in the same run (``bench/machine.py``): memory bandwidth,
    transcendentals and multiply-adds in registers, the recurrent matmul at the model's shape
    and a large matmul, the bytes per synapse update XLA's compiled dense layer moves; each
    ceiling in synapse updates/s (per dataflow: XLA's layer as compiled, ``h`` and ``c``
    through memory every tick, once per step as the fused kernel does, float32 and bfloat16)
    and each figure of (b) as a fraction of them;
(d) the baselines' seconds per generation;
(e) 2 generations of the quick start on the default device against the same run on the CPU:
    the meta-parameters must agree within float tolerance (two ES steps; over more generations
    the trajectories part on the initial ln C plateau, where float sums in another order flip
    near-tied ranks: measured on an H200, 3e-7 apart after 2 generations, 3e-3 after 5);
(f) a projection: device-hours of the paper's Fig. 6 run (1,024 pairs, episode 500, 10,000
    generations) at the rate measured in (b);
(g) the speed levers against the default, each with its fitness agreement: all pairs in one
    chunk (``pairs_per_chunk: null``) against ``auto``, and bfloat16 states
    (``model.vsml_rnn.state_dtype: bfloat16``);
(h) the fused dense step (``model.vsml_rnn.dense_step: fused``, one Pallas/Triton kernel,
    :mod:`vsml.learners.vsml_fused`) against XLA's (``xla``) on the same card, float32 and
    bfloat16 states: rate, fraction of every ceiling of (c), XLA's working memory and the
    device's peak memory per pair, compile time, fitness agreement with XLA's path; and in
    (e), 2 quick-start generations with the paper's sub-RNN (M 8, S 16, which the kernel
    covers) with the fused step on the device against XLA's on the CPU. (h)'s fitness agreement is
    at the rates' default matmul precision, where XLA's own path may round through TF32; the
    kernel computes ``h·W_h`` in float32 always, and (a), at ``highest``, is its exact check.

(h) runs first after the machine: ``(b)``, ``(a)`` and ``(g)`` run ``dense_step: auto``, which
is the fused kernel on a CUDA GPU wherever it covers the layer (the default stays ``xla`` until
this check has passed on a card), unless (h)'s fused case failed to build or run, in which case
they run ``dense_step: xla`` (noted).

Every case runs as ``bench/throughput.py`` runs it (a fresh process, the real
``EvolutionStrategy.evaluate``), except under ``--smoke``, where all cases share
this process to stay fast. A global time guard (``--budget``, seconds) skips the
remaining sizes with a printed note rather than overrunning. Nothing is
downloaded (the data is ``mnist_offline``/``digits``, which ship with the
packages) and wandb is off. The result is also written as a markdown block for
``bench/RESULTS.md`` (``--markdown``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import throughput  # noqa: E402 — needs ROOT on sys.path when run as a script

FIG6 = {"pairs": 1024, "length": 500, "generations": 10_000}
BASELINES = ("MetaRNN", "HebbianFW", "FWP", "FWMemory", "SGD", "NodePert")
FITNESS_RTOL = 1e-4  # fast vs literal, chunked vs whole slice: float32 sums in another order
# (a) and (e) compare computations that must be equal, so they run float32 matmuls as the CPU
# does: GPUs' default precision may use TF32 (10-bit mantissa), whose rounding would flip ES's
# near-tied ranks on the initial plateau. The rates (b, d, g) keep the default a run uses.
EXACT_MATMULS = {"JAX_DEFAULT_MATMUL_PRECISION": os.environ.get("JAX_DEFAULT_MATMUL_PRECISION") or "highest"}
PARAMS_ATOL, PARAMS_RTOL = 1e-4, 1e-3  # (e): of the total change of the meta-parameters over the run
STARTUP_GUESS_S = 20.0  # a fresh process: import, device start, data, compile (refined as cases run)
QUICKSTART_RESERVE_S = 110.0  # kept free for (e)'s two device runs while (b) and (h) run


# --------------------------------------------------------------------------- sizes


def plan(smoke: bool) -> dict:
    """Cases of each section (``throughput.run_case`` dicts)."""
    if smoke:
        tiny = {"dataset": "digits", "repeats": 1, "config": ["model.sub_rnn.slow_size=4", "model.sub_rnn.msg_size=4"]}
        return {
            # chunk null outside (b) and (g): auto compiles a one-pair slice first, twice the compile time
            "a": [{**tiny, "impl": impl, "pairs": 2, "length": 4, "chunk": None} for impl in ("fast", "literal")],
            "b": [{**tiny, "impl": "fast", "pairs": p, "length": t, "chunk": "auto"} for t, p in ((4, 2), (8, 1))],
            "d": [
                {"dataset": "digits", "repeats": 1, "model": m, "pairs": 1, "length": 3, "chunk": None}
                for m in ("SGD", "MetaRNN")
            ],
            "g": {"pairs": 2, "length": 4, "base": tiny},
            # the kernel needs S >= 16: the paper's sub-RNN on 8x8 digits; interpret mode on a CPU
            "h": {"pairs": 1, "length": 2, "base": {"dataset": "digits", "repeats": 1}, "bfloat16": False},
            "e": {"generations": 2, "extra": ["training.population_size=2", "training.episode_length=4"]},
            "peaks_scale": 0.001,
            "traffic_members": 1,
        }
    return {
        "a": [
            {"impl": impl, "pairs": 8, "length": 100, "chunk": "auto", "repeats": 1, "env": EXACT_MATMULS}
            for impl in ("fast", "literal")
        ],
        "b": [
            {"impl": "fast", "pairs": p, "length": t, "chunk": "auto", "repeats": 2}
            for t, p in ((100, 8), (100, 32), (100, 128), (100, 512), (500, 128), (500, 512))
        ],
        "d": [{"model": m, "pairs": 16, "length": 100, "chunk": "auto", "repeats": 2} for m in BASELINES],
        "g": {"pairs": 128, "length": 100, "base": {"repeats": 2}},
        "h": {"pairs": 128, "length": 100, "base": {"repeats": 2}},
        "e": {"generations": 2, "extra": []},  # why 2: the module docstring, (e)
        "peaks_scale": 1.0,
        "traffic_members": 8,
    }


def lever_cases(g: dict) -> list[tuple[str, dict]]:
    base = {**g["base"], "impl": "fast", "pairs": g["pairs"], "length": g["length"]}
    config = list(base.get("config", []))
    return [
        ("default (pairs_per_chunk auto, float32)", {**base, "chunk": "auto"}),
        ("all pairs in one chunk (pairs_per_chunk null)", {**base, "chunk": None}),
        (
            "bfloat16 states (state_dtype bfloat16)",
            {**base, "chunk": "auto", "config": [*config, "model.vsml_rnn.state_dtype=bfloat16"]},
        ),
    ]


FUSED_QUICKSTART = ["model.sub_rnn.slow_size=16", "model.sub_rnn.msg_size=8"]  # (e): a sub-RNN the kernel covers


def step_cases(h: dict) -> list[tuple[str, dict]]:
    """(h): XLA's dense step against the fused kernel (float32 and bfloat16 states), all else equal."""
    base = {**h["base"], "impl": "fast", "pairs": h["pairs"], "length": h["length"], "chunk": "auto"}
    config = list(base.get("config", []))
    cases = [
        ("xla", {**base, "config": [*config, "model.vsml_rnn.dense_step=xla"]}),
        ("fused", {**base, "config": [*config, "model.vsml_rnn.dense_step=fused"]}),
    ]
    if h.get("bfloat16", True):  # (--smoke leaves it out: interpret mode compiles slowly)
        bf16 = [*config, "model.vsml_rnn.dense_step=fused", "model.vsml_rnn.state_dtype=bfloat16"]
        cases.append(("fused, bfloat16 states", {**base, "config": bf16}))
    return cases


# --------------------------------------------------------------------------- running cases


class Budget:
    """Wall-clock guard: a case runs only if its estimate fits the time left."""

    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds
        self.overheads: list[float] = []  # startup + compile of finished cases
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def estimate(self, case: dict, rate: float | None) -> float:
        overhead = statistics.median(self.overheads) if self.overheads else STARTUP_GUESS_S
        work = 0.0
        if rate:
            work = (case.get("repeats", 1) + 1) * updates_of(case) / rate
        return overhead + work

    def allows(self, what: str, estimate: float, reserve: float = 0.0) -> bool:
        if estimate <= self.left() - reserve:
            return True
        note = f"skipped (time guard): {what}, estimated {estimate:.0f} s, {max(self.left(), 0):.0f} s left"
        print(f"  {note}", flush=True)
        self.skipped.append(note)
        return False


def updates_of(case: dict, synapses: int = 7840, ticks: int = 2) -> float:
    """Synapse updates of one slice evaluation of the paper's model (both members of each pair)."""
    return 2 * case["pairs"] * case["length"] * case.get("batch", 1) * synapses * ticks


class Runner:
    """Runs cases in fresh processes (GPU figures) or in this process (``--smoke``)."""

    def __init__(self, smoke: bool, budget: Budget):
        self.smoke, self.budget = smoke, budget
        self.done: dict[str, dict] = {}  # a case asked for twice (the levers' default) runs once

    def run(self, case: dict, what: str, rate: float | None = None, reserve: float = 0.0) -> dict | None:
        """The case's figures, or None when the time guard skipped it or it failed (noted either way).

        ``reserve``: seconds of the budget this case must leave for what comes later.
        """
        key = json.dumps(case, sort_keys=True)
        if key in self.done:
            return self.done[key]
        result = self._run(case, what, rate, reserve)
        if result is not None:
            self.done[key] = result
        return result

    def _run(self, case: dict, what: str, rate: float | None, reserve: float) -> dict | None:
        if not self.budget.allows(what, self.budget.estimate(case, rate), reserve):
            return None
        start = time.perf_counter()
        try:
            if self.smoke:
                result = throughput.run_case(case)
            else:
                result = throughput.spawn(case, "", timeout=max(self.budget.left(), 1.0))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            note = f"failed: {what}: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}"
            print(f"  {note}", flush=True)
            self.budget.skipped.append(note)
            return None
        wall = time.perf_counter() - start
        self.budget.overheads.append(max(wall - (case.get("repeats", 1) + 1) * result["generation_s"], 0.0))
        return result


# --------------------------------------------------------------------------- the machine


def nvidia_smi_facts() -> dict:
    """GPU name, driver, memory and the CUDA version the driver supports (empty without nvidia-smi)."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return {}
    facts = {}
    try:
        query = subprocess.run(
            [command, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [row.split(", ") for row in query.stdout.strip().splitlines() if row.count(", ") >= 2]
        if rows:
            facts.update(gpu=rows[0][0], driver=rows[0][1], gpu_memory=rows[0][2], gpus=len(rows))
        header = subprocess.run([command], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"CUDA Version:\s*([0-9.]+)", header)
        if match:
            facts["cuda_driver"] = match.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def cuda_packages() -> dict:
    found = {}
    for name in (
        "jax-cuda12-plugin",
        "jax-cuda12-pjrt",
        "jax-cuda13-plugin",
        "jax-cuda13-pjrt",
        "nvidia-cuda-runtime-cu12",
        "nvidia-cudnn-cu12",
    ):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def probe(scale: float, traffic_members: int) -> dict:
    """This process's view: the machine, the platform line, the measured peak rates and the bytes
    per update of XLA's compiled dense layer (float32 and bfloat16 states)."""
    from bench import machine  # noqa: PLC0415 — imports jax
    from vsml import run_platform  # noqa: PLC0415

    info = machine.describe()
    peaks = machine.measure_peaks(scale=scale)
    traffic = {dtype: machine.xla_layer_traffic(traffic_members, 1, dtype) for dtype in ("float32", "bfloat16")}
    return {"machine": info, "announce": run_platform.announce(), "peaks": peaks, "traffic": traffic}


def probe_in_subprocess(scale: float, traffic_members: int, timeout: float) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__)), "--probe", str(scale), str(traffic_members)],
        cwd=ROOT,
        env=throughput.case_environ(""),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"machine probe failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- (e) quick start, device vs CPU


def start_quickstart(run_dir: Path, generations: int, extra: list[str], cpu: bool) -> subprocess.Popen:
    """Starts ``launch.py`` on the quick start for ``generations`` generations (JAX_PLATFORMS=cpu if ``cpu``)."""
    env = {**os.environ, "PYTHONPATH": throughput.child_python_path(), **EXACT_MATMULS}
    if cpu:
        env["JAX_PLATFORMS"] = "cpu"
    command = [
        sys.executable,
        str(ROOT / "launch.py"),
        "--config_files",
        "configs/quickstart.yaml",
        "--run_dir",
        str(run_dir),
        "--config",
        f"training.iterations={generations}",
        f"checkpoint.frequency={generations}",
        "summary.frequency=1",
        "evaluation.frequency=1000",
        "evaluation.datasets=[digits]",
        "evaluation.count=1",
        "evaluation.episode_length=5",
        "logging.wandb=disabled",
        "runtime.compilation_cache='off'",
        *extra,
    ]
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")  # noqa: SIM115 — closed with the process
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def checkpoint_params(run_dir: Path) -> dict:
    import numpy as np  # noqa: PLC0415

    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as data:
        return {n: data[n].astype(np.float64) for n in data.files if n.startswith("params/")}


def initial_params(overrides: list[str], cpu_only: bool) -> dict:
    """The quick start's initial meta-parameters under the checkpoint's names (both runs start from them).

    ``cpu_only``: keep this process off the GPU (it must not hold device memory).
    """
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    if cpu_only:
        jax.config.update("jax_platforms", "cpu")

    from vsml.checkpoint import flatten_tree  # noqa: PLC0415
    from vsml.config import build_config, resolve_for_rank  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415

    config = resolve_for_rank(build_config([str(ROOT / "configs/quickstart.yaml")], overrides), 0)
    learner = build_learner(config["model"])
    params = learner.init(jax.random.PRNGKey(config["seed"]))
    return {n: np.asarray(v, np.float64) for n, v in flatten_tree("params", params).items()}


def finish_quickstart(runs: dict, timeout: float, overrides: list[str], cpu_only: bool) -> dict:
    """Waits for both runs; compares their final meta-parameters against the change over the run."""
    import numpy as np  # noqa: PLC0415

    out = {}
    for name, (proc, run_dir) in runs.items():
        try:
            proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log = (run_dir.parent / f"{run_dir.name}.log").read_text().strip().splitlines()
        if proc.returncode != 0 or not (run_dir / "checkpoint.npz").exists():
            return {"error": f"the {name} run failed (exit {proc.returncode}): {log[-1] if log else ''}"}
        out[name] = checkpoint_params(run_dir)
        out[f"{name}_runs_on"] = next((line for line in log if line.startswith("runs on:")), "?")
    device, cpu, start = out["device"], out["cpu"], initial_params(overrides, cpu_only)
    where = {"device_runs_on": out["device_runs_on"], "cpu_runs_on": out["cpu_runs_on"]}
    if set(device) != set(cpu) or set(cpu) != set(start):
        return {"error": "the runs' checkpoints hold different meta-parameters", **where}
    diff = max(float(np.abs(device[n] - cpu[n]).max()) for n in cpu)
    change = max(float(np.abs(cpu[n] - start[n]).max()) for n in cpu)
    tolerance = PARAMS_ATOL + PARAMS_RTOL * change
    return {
        "max_abs_diff": diff,
        "max_change": change,
        "tolerance": tolerance,
        "agree": diff <= tolerance,
        "count": int(sum(v.size for v in cpu.values())),
        **where,
    }


# --------------------------------------------------------------------------- formatting


def fmt(value, spec=".3g", missing="-") -> str:
    return missing if value is None else format(value, spec)


def max_rel_diff(a: dict, b: dict) -> float:
    return max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(a["fitness"], b["fitness"]))


def antithetic_agreement(a: dict, b: dict) -> float | None:
    """Cosine of the pairs' fitness differences (what the ES gradient weights are made of)."""
    import numpy as np  # noqa: PLC0415

    da = np.subtract(*np.asarray(a["fitness"]).reshape(-1, 2).T)
    db = np.subtract(*np.asarray(b["fitness"]).reshape(-1, 2).T)
    norm = np.linalg.norm(da) * np.linalg.norm(db)
    return float(da @ db / norm) if norm > 0 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probe", type=float, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="every section at tiny size in one process (CPU)")
    parser.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="seconds for all sections; remaining sizes are skipped with a note (default 420)",
    )
    parser.add_argument("--markdown", default="gpu_check.md", help="where the markdown block goes")
    parser.add_argument("--json", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    from vsml import runtime  # noqa: PLC0415

    runtime.apply_xla_flags()  # this process (smoke) and every child run under the project's flags
    if args.probe is not None:
        print(json.dumps(probe(args.probe[0], int(args.probe[1]))))
        return 0

    budget = Budget(args.budget)
    sizes = plan(args.smoke)
    report = {
        "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nvidia_smi": nvidia_smi_facts(),
        "cuda_packages": cuda_packages(),
        "matmul_precision": os.environ.get("JAX_DEFAULT_MATMUL_PRECISION", "default"),
        "sections": {},
    }
    scratch = Path(tempfile.mkdtemp(prefix="vsml-gpu-check-"))
    # (e): the CPU reference runs in the background from the start (the slow half); the device
    # run waits until the benchmark cases are done (they must not share the GPU), except under
    # --smoke, where both are CPU runs.
    quick = sizes["e"]
    fused_extra = [*quick["extra"], *FUSED_QUICKSTART]
    runs = {"cpu": (start_quickstart(scratch / "cpu", quick["generations"], quick["extra"], cpu=True), scratch / "cpu")}
    # the fused step's reference: XLA's step on the CPU, the same sub-RNN
    fused_runs = {
        "cpu": (
            start_quickstart(scratch / "cpu-s16", quick["generations"], fused_extra, cpu=True),
            scratch / "cpu-s16",
        )
    }
    fused_device_extra = [*fused_extra, "model.vsml_rnn.dense_step=fused"]
    if args.smoke:
        runs["device"] = (
            start_quickstart(scratch / "device", quick["generations"], quick["extra"], cpu=False),
            scratch / "device",
        )
        fused_runs["device"] = (
            start_quickstart(scratch / "device-s16", quick["generations"], fused_device_extra, cpu=False),
            scratch / "device-s16",
        )
    reserve = 0.0 if args.smoke else QUICKSTART_RESERVE_S

    # ---- machine and (c) peaks
    print("== machine", flush=True)
    scale, members = sizes["peaks_scale"], sizes["traffic_members"]
    probed = probe(scale, members) if args.smoke else probe_in_subprocess(scale, members, budget.left())
    info, peaks, traffic = probed["machine"], probed["peaks"], probed["traffic"]
    from bench import machine  # noqa: PLC0415

    smi = report["nvidia_smi"]
    for line in probed["announce"]:
        print(f"  {line}")
    print(f"  {machine.summary_line(info)}")
    print(
        f"  GPU: {smi.get('gpu', '(no nvidia-smi)')}, driver {smi.get('driver', '-')}, "
        f"CUDA (driver) {smi.get('cuda_driver', '-')}, memory {smi.get('gpu_memory', '-')}; "
        f"jax CUDA packages: {report['cuda_packages'] or '(none)'}; "
        f"matmul precision: {report['matmul_precision']}",
        flush=True,
    )
    report.update(machine=info, announce=probed["announce"], peaks=peaks, traffic=traffic)
    print(f"== (c) roofline of a synapse update (paper model), measured here\n  {describe_peaks(peaks, traffic)}")
    print(indent(machine.roofline_table(ceilings(peaks, traffic, None))), flush=True)
    runner = Runner(args.smoke, budget)

    # ---- (h) the fused dense step against XLA's
    print(
        "== (h) dense step: fused kernel vs XLA's, same card (float32 maths; bfloat16 states as an option)", flush=True
    )
    steps = []
    for name, case in step_cases(sizes["h"]):
        result = runner.run(case, f"(h) {name}", None, reserve)
        if result is not None:
            steps.append({"step": name, **result, "roofline": ceilings(peaks, traffic, result)})
    if steps and steps[0]["step"] == "xla":
        base = steps[0]
        for step in steps:
            step["speedup"] = step["updates_per_s"] / base["updates_per_s"]
            step["max_rel_fitness_diff"] = max_rel_diff(step, base)
            step["antithetic_cosine"] = antithetic_agreement(step, base)
            peak = step.get("device_peak_bytes")
            dataflow = (
                "XLA layer mem"
                if step["step"] == "xla"
                else "bf16 per step"
                if "bfloat16" in step["step"]
                else "h,c per step"
            )
            closest = machine.binding(step["roofline"], dataflow)
            step["binds"] = closest["ceiling"] if closest else None
            print(
                f"  {step['step']}: {fmt(step['updates_per_s'])} updates/s ({step['speedup']:.2f}x XLA's; "
                f"{short_fractions(step['roofline'])}), XLA plan {fmt_kib(step.get('bytes_per_pair'))} KiB/pair, "
                f"device peak {fmt_kib(peak / step['pairs'] if peak else None)} KiB/pair, compile "
                f"{step['compile_s']:.1f} s, max rel fitness diff {step['max_rel_fitness_diff']:.1e}, cosine "
                f"{fmt(step['antithetic_cosine'], '.4f')}; closest ceiling not exceeded: {step['binds']}",
                flush=True,
            )
        print(indent(fraction_table(steps, "step")), flush=True)
    report["sections"]["h"] = steps
    # dense_step auto is the kernel on a CUDA GPU: if it did not build there, (a), (b) and (g)
    # measure XLA's step rather than fail case by case.
    fused_ok = any(step["step"] == "fused" for step in steps)
    step_choice = ["model.vsml_rnn.dense_step=auto" if fused_ok else "model.vsml_rnn.dense_step=xla"]
    if not fused_ok:
        note = "the fused step failed: (a), (b) and (g) run dense_step xla"
        print(f"  {note}", flush=True)
        budget.skipped.append(note)
    for section in ("a", "b"):
        sizes[section] = [{**case, "config": [*case.get("config", []), *step_choice]} for case in sizes[section]]
    sizes["g"]["base"] = {**sizes["g"]["base"], "config": [*sizes["g"]["base"].get("config", []), *step_choice]}

    # ---- (a) fast vs literal
    print(
        f"== (a) fast path vs literal version, same population (matmul precision "
        f"{EXACT_MATMULS['JAX_DEFAULT_MATMUL_PRECISION']})",
        flush=True,
    )
    a = [runner.run(case, f"(a) {case['impl']}") for case in sizes["a"]]
    a_ok = None
    if all(a):
        diff = max_rel_diff(a[0], a[1])
        a_ok = diff <= FITNESS_RTOL
        print(
            f"  {a[0]['pairs']} pairs, episode {a[0]['length']}: max |fitness diff| / max(1, |fitness|) = "
            f"{diff:.1e} ({'agree' if a_ok else 'DISAGREE'}, tolerance {FITNESS_RTOL:g}); "
            f"fast {a[0]['generation_s']:.3f} s, literal {a[1]['generation_s']:.3f} s per slice",
            flush=True,
        )
    report["sections"]["a"] = {"cases": a, "agree": a_ok}

    # ---- (b) throughput grid + (c) fractions of the limits
    print("== (b) paper model, chunking auto, dense_step auto; (c) as a fraction of the ceilings", flush=True)
    grid, rate = [], None
    for case in sizes["b"]:
        result = runner.run(case, f"(b) {case['pairs']} pairs, episode {case['length']}", rate, reserve)
        if result is None:
            continue
        result["roofline"] = ceilings(peaks, traffic, result)
        grid.append(result)
        rate = result.get("updates_per_s") or rate
        print(
            f"  {result['pairs']:>4} pairs T {result['length']:>4}: {fmt(result.get('updates_per_s'))} updates/s "
            f"({short_fractions(result['roofline'])}), chunk "
            f"{result['chosen_chunk'] or 'whole slice'}, {fmt_kib(result.get('bytes_per_pair'))} KiB/pair, "
            f"compile {result['compile_s']:.1f} s",
            flush=True,
        )
    report["sections"]["b"] = grid

    if grid:
        best = max(grid, key=lambda r: r["updates_per_s"])
        print(f"  roofline at the best rate ({best['pairs']} pairs, episode {best['length']}):")
        print(indent(machine.roofline_table(best["roofline"])), flush=True)

    # ---- (e) quick start on the device vs the CPU
    print(
        f"== (e) quick start, {quick['generations']} generations: default device vs CPU (matmul precision "
        f"{EXACT_MATMULS['JAX_DEFAULT_MATMUL_PRECISION']})",
        flush=True,
    )
    if "device" not in runs:
        runs["device"] = (
            start_quickstart(scratch / "device", quick["generations"], quick["extra"], cpu=False),
            scratch / "device",
        )
    e = finish_quickstart(runs, budget.left(), quick["extra"], cpu_only=not args.smoke)
    for proc, _ in runs.values():  # a run that failed early leaves the other one running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if "error" in e:
        print(f"  {e['error']}", flush=True)
    else:
        print(f"  device run: {e['device_runs_on']}", flush=True)
        print(
            f"  max |meta-parameter diff| {e['max_abs_diff']:.2e} over {e['count']} meta-parameters "
            f"(they moved up to {fmt(e['max_change'])}; tolerance {e['tolerance']:.1e}): "
            f"{'agree' if e['agree'] else 'DISAGREE'}",
            flush=True,
        )
    report["sections"]["e"] = e
    print(
        f"== (e) the same with the paper's sub-RNN (M 8, S 16): fused step on the default device vs XLA's "
        f"on the CPU, {quick['generations']} generations",
        flush=True,
    )
    if "device" not in fused_runs:
        fused_runs["device"] = (
            start_quickstart(scratch / "device-s16", quick["generations"], fused_device_extra, cpu=False),
            scratch / "device-s16",
        )
    e_fused = finish_quickstart(fused_runs, budget.left(), fused_extra, cpu_only=not args.smoke)
    for proc, _ in fused_runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"  {quickstart_line(e_fused)}", flush=True)
    report["sections"]["e_fused"] = e_fused

    # ---- (g) levers
    print("== (g) speed levers against the default", flush=True)
    levers = []
    for name, case in lever_cases(sizes["g"]):
        result = runner.run(case, f"(g) {name}", rate, reserve)
        if result is not None:
            levers.append({"lever": name, **result})
    if levers and levers[0]["lever"].startswith("default"):
        base = levers[0]
        for lever in levers:
            lever["speedup"] = lever["updates_per_s"] / base["updates_per_s"]
            lever["max_rel_fitness_diff"] = max_rel_diff(lever, base)
            lever["antithetic_cosine"] = antithetic_agreement(lever, base)
            print(
                f"  {lever['lever']}: {fmt(lever['updates_per_s'])} updates/s ({lever['speedup']:.2f}x), "
                f"max rel fitness diff {lever['max_rel_fitness_diff']:.1e}, cosine of pair differences "
                f"{fmt(lever['antithetic_cosine'], '.4f')}",
                flush=True,
            )
    report["sections"]["g"] = levers

    # ---- (d) baselines
    print("== (d) baselines", flush=True)
    baselines = []
    for case in sizes["d"]:
        result = runner.run(case, f"(d) {case['model']}")
        if result is not None:
            baselines.append(result)
            print(
                f"  {result['model']}: {result['generation_s']:.3f} s/gen ({result['pairs']} pairs, episode "
                f"{result['length']}), compile {result['compile_s']:.1f} s",
                flush=True,
            )
    report["sections"]["d"] = baselines

    # ---- (f) projection
    print("== (f) projection: the paper's Fig. 6 run on one device", flush=True)
    f = projection(grid)
    print(f"  {f['text']}", flush=True)
    report["sections"]["f"] = f

    report["skipped"] = budget.skipped
    report["elapsed_s"] = budget.elapsed()
    block = markdown(report)
    Path(args.markdown).write_text(block)
    print(f"\n{block}")
    print(f"(markdown written to {args.markdown}; {budget.elapsed():.0f} s in all)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def describe_peaks(peaks: dict, traffic: dict) -> str:
    return (
        f"memory {peaks['bandwidth_bytes'] / 1e9:.3g} GB/s, large matmul {peaks['matmul_flops']:.3g} FLOP/s, "
        f"model-shape matmul {peaks['model_matmul_flops']:.3g} FLOP/s, transcendentals in registers "
        f"{peaks['transcendentals_per_s']:.3g}/s, FMA in registers {peaks['vector_flops']:.3g} FLOP/s; XLA's dense "
        f"layer moves {traffic['float32']['bytes_per_update']:.0f} B per update (bfloat16 states "
        f"{traffic['bfloat16']['bytes_per_update']:.0f} B), {traffic['float32']['temp_bytes_per_member'] / 2**20:.1f} "
        f"MiB of temporaries per member"
    )


def ceilings(peaks: dict, traffic: dict, result: dict | None) -> list[dict]:
    """The roofline rows (bench/machine.py) for a case's model, with its rate's fraction of each."""
    from bench import machine  # noqa: PLC0415

    cost = machine.update_cost((result or {}).get("slow_size", 16))
    return machine.roofline(
        peaks, cost, traffic["float32"]["bytes_per_update"], result.get("updates_per_s") if result else None
    )


SHORT = ("XLA layer mem", "h,c per step", "transc.", "FP32 FMA")  # the ceilings a one-line summary names


def short_fractions(rows: list[dict]) -> str:
    return ", ".join(f"{r['fraction']:.0%} of {r['short']}" for r in rows if r["short"] in SHORT)


def fraction_table(results: list[dict], label: str) -> str:
    """One row per result, one column per ceiling: the result's fraction of it."""
    from bench import throughput as tp  # noqa: PLC0415

    names = [r["short"] for r in results[0]["roofline"]]
    rows = [[r[label], f"{r['updates_per_s']:.3g}", *(f"{c['fraction']:.0%}" for c in r["roofline"])] for r in results]
    return tp.table(rows, [label, "updates/s", *(f"of {n}" for n in names)])


def quickstart_line(e: dict) -> str:
    if "error" in e:
        return e["error"]
    return (
        f"device run: {e['device_runs_on']}; max |meta-parameter diff| {e['max_abs_diff']:.2e} over {e['count']} "
        f"meta-parameters (they moved up to {fmt(e['max_change'])}; tolerance {e['tolerance']:.1e}): "
        f"{'agree' if e['agree'] else 'DISAGREE'}"
    )


def fmt_kib(value) -> str:
    return "-" if not value else f"{value / 2**10:.0f}"


def projection(grid: list[dict]) -> dict:
    """Device-hours of Fig. 6 at the best rate measured at its episode length (else the longest measured)."""
    if not grid:
        return {"text": "no rate measured (every (b) case was skipped)", "hours": None}
    longest = max(r["length"] for r in grid)
    at_length = [r for r in grid if r["length"] == min(FIG6["length"], longest)]
    best = max(at_length, key=lambda r: r["updates_per_s"])
    synapses = best.get("synapses", 7840)
    total = 2 * FIG6["pairs"] * FIG6["length"] * synapses * 2 * FIG6["generations"]
    hours = total / best["updates_per_s"] / 3600
    text = (
        f"{total:.3g} synapse updates at {best['updates_per_s']:.3g}/s (measured at {best['pairs']} pairs, "
        f"episode {best['length']}) = {hours:.3g} device-hours on one device "
        f"({hours / 8:.3g} h on 8, ideal scaling; ES communication is negligible, bench/RESULTS.md)"
    )
    if synapses != 7840:
        text += " [not the paper's model: smoke sizes]"
    return {"text": text, "hours": hours, "rate": best["updates_per_s"], "from": [best["pairs"], best["length"]]}


def markdown(report: dict) -> str:
    info, smi, peaks, traffic = report["machine"], report["nvidia_smi"], report["peaks"], report["traffic"]
    from bench import machine  # noqa: PLC0415

    lines = [
        f"### GPU check ({report['date']}{', SMOKE: tiny sizes, not figures' if report['smoke'] else ''})",
        "",
        f"Machine: {machine.summary_line(info)}; backend {info['backend']}, device {info['device']}.  ",
        f"GPU: {smi.get('gpu', '-')} ({smi.get('gpu_memory', '-')}), driver {smi.get('driver', '-')}, "
        f"CUDA (driver) {smi.get('cuda_driver', '-')}; jax CUDA packages: "
        f"{', '.join(f'{k} {v}' for k, v in report['cuda_packages'].items()) or 'none'}; "
        f"matmul precision {report['matmul_precision']} for the rates, "
        f"{EXACT_MATMULS['JAX_DEFAULT_MATMUL_PRECISION']} for (a) and (e).  ",
        f"Measured: {describe_peaks(peaks, traffic)}.",
        "",
    ]
    a = report["sections"]["a"]
    if a["agree"] is not None:
        fast, literal = a["cases"]
        lines.append(
            f"(a) fast vs literal, {fast['pairs']} pairs, episode {fast['length']}: max relative fitness "
            f"difference {max_rel_diff(fast, literal):.1e} — {'agree' if a['agree'] else 'DISAGREE'}; "
            f"{literal['generation_s'] / fast['generation_s']:.1f}x faster."
        )
        lines.append("")
    grid = report["sections"]["b"]
    if grid:
        rows = [
            [
                r["pairs"],
                r["length"],
                r["chosen_chunk"] or "whole",
                f"{r['generation_s']:.3f}",
                f"{r['updates_per_s']:.3g}",
                *(f"{c['fraction']:.0%}" for c in r["roofline"] if c["short"] in SHORT),
                fmt_kib(r.get("bytes_per_pair")),
                throughput.fmt_mib(r.get("device_peak_bytes")),
                f"{r['compile_s']:.1f}",
            ]
            for r in grid
        ]
        model = "tiny model (smoke)" if report["smoke"] else "Paper model (784→10, M 8, S 16, 2 ticks)"
        lines += [
            f"(b, c) {model}, `pairs_per_chunk: auto`, `dense_step: auto`; fractions of the roofline's ceilings:",
            "",
            throughput.table(
                rows,
                [
                    "pairs",
                    "T",
                    "chunk",
                    "s/slice",
                    "updates/s",
                    *(f"of {name}" for name in SHORT),
                    "KiB/pair",
                    "device peak MiB",
                    "compile s",
                ],
            ),
            "",
        ]
    if grid:
        best = max(grid, key=lambda r: r["updates_per_s"])
        lines += [
            f"(c) Roofline at the best (b) rate ({best['pairs']} pairs, episode {best['length']}):",
            "",
            machine.roofline_table(best["roofline"]),
            "",
        ]
    steps = report["sections"]["h"]
    if steps and "speedup" in steps[0]:
        rows = [
            [
                r["step"],
                f"{r['updates_per_s']:.3g}",
                f"{r['speedup']:.2f}x",
                fmt_kib(r.get("bytes_per_pair")),
                fmt_kib(r["device_peak_bytes"] / r["pairs"] if r.get("device_peak_bytes") else None),
                f"{r['compile_s']:.1f}",
                f"{r['max_rel_fitness_diff']:.1e}",
                fmt(r.get("antithetic_cosine"), ".4f"),
            ]
            for r in steps
        ]
        columns = ["step", "updates/s", "vs xla", "XLA plan KiB/pair", "device peak KiB/pair", "compile s"]
        lines += [
            f"(h) Dense step, {steps[0]['pairs']} pairs, episode {steps[0]['length']}:",
            "",
            throughput.table(rows, [*columns, "max rel fitness diff vs xla", "cosine of pair differences"]),
            "",
            fraction_table(steps, "step"),
            "",
        ]
    levers = report["sections"]["g"]
    if levers and "speedup" in levers[0]:
        rows = [
            [
                lev["lever"],
                f"{lev['updates_per_s']:.3g}",
                f"{lev['speedup']:.2f}x",
                f"{lev['max_rel_fitness_diff']:.1e}",
                fmt(lev.get("antithetic_cosine"), ".4f"),
            ]
            for lev in levers
        ]
        lines += [
            f"(g) Speed levers, {levers[0]['pairs']} pairs, episode {levers[0]['length']}:",
            "",
            throughput.table(
                rows, ["lever", "updates/s", "vs default", "max rel fitness diff", "cosine of pair differences"]
            ),
            "",
        ]
    baselines = report["sections"]["d"]
    if baselines:
        rows = [[r["model"], f"{r['generation_s']:.3f}", f"{r['compile_s']:.1f}"] for r in baselines]
        lines += [
            f"(d) Baselines, {baselines[0]['pairs']} pairs, episode {baselines[0]['length']}:",
            "",
            throughput.table(rows, ["model", "s/gen", "compile s"]),
            "",
        ]
    e = report["sections"]["e"]
    lines.append(
        "(e) Quick start on the device vs the CPU: "
        + (
            e["error"]
            if "error" in e
            else f"max |meta-parameter diff| {e['max_abs_diff']:.2e} (moved up to {fmt(e['max_change'])}, tolerance "
            f"{e['tolerance']:.1e}) — {'agree' if e['agree'] else 'DISAGREE'}; the device run said "
            f"`{e['device_runs_on']}`."
        )
    )
    lines.append(
        f"(e) The paper's sub-RNN, fused step on the device vs XLA's on the CPU: {quickstart_line(report['sections']['e_fused'])}."
    )
    lines += ["", f"(f) Fig. 6 projection: {report['sections']['f']['text']}.", ""]
    if report["skipped"]:
        lines += ["Skipped or failed:", *[f"- {note}" for note in report["skipped"]], ""]
    lines.append(
        f"Whole check: {report['elapsed_s']:.0f} s (`python3 bench/gpu_check.py"
        f"{' --smoke' if report['smoke'] else ''}`)."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
