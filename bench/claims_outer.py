"""The outer loop as an axis of ``bench/claims.py``: ES against meta-gradients at an equal budget.

    python3 bench/claims.py --out runs/claims-outer --scale outer --outer-loops es metagrad \
        --learners VSML-quickstart MetaRNN --train-sets digits

A learner of :data:`bench.claims.LEARNERS` meta-trained by meta-gradients is the
cell ``<learner>+metagrad``: the ES cell's learner, data and presentation, with
``configs/backprop.yaml``'s outer loop (read from that file, so the bench follows
the shipped default). Its budget is the ES cell's, seen two ways:

- **equal episodes**: ES spends 2P episodes a generation (P antithetic pairs), a
  meta-gradient step ``training.population_size`` episodes, so G generations are
  ``G * 2P / population`` steps; the cell runs that many (times ``--metagrad-margin``)
  and its ``metatest.json`` is meta-tested at the equal-episodes step;
- **equal wall-clock**: the step checkpoint (``checkpoint.with_step``) reached when
  the meta-gradient run had run as long as the ES cell of the same learner, set and
  seed (``time`` of ``metrics.jsonl``: wall time since the training loop began,
  after data loading, the step's compilation included; same machine), meta-tested into
  ``metatest-equal-time.json``.

The report then sets the two outer loops side by side: held-out own set against the
unseen sets, the introspection curve, meta-loss against wall time, and a verdict on
"meta-gradients fit, ES generalises" per learner.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
METAGRAD = "+metagrad"  # a cell's learner name ends with it when its outer loop is meta-gradients
OUTER_LOOPS = ("es", "metagrad")
BACKPROP_CONFIG = ROOT / "configs" / "backprop.yaml"
EQUAL_TIME_FILE = "metatest-equal-time.json"
STEP_CHECKPOINTS = 20  # step checkpoints over a meta-gradient run: the equal-time view's resolution


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the dotted overrides launch.py takes)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def metagrad_overrides() -> dict:
    """The shipped meta-gradient outer loop: ``configs/backprop.yaml`` as dotted overrides."""
    return flatten(yaml.safe_load(BACKPROP_CONFIG.read_text()))


def with_outer_loops(learners: list[str], outer_loops: list[str]) -> list[str]:
    """Every learner once per outer loop, ES first: ``[VSML, VSML+metagrad, MetaRNN, ...]``."""
    names = []
    for learner in learners:
        for outer in outer_loops:
            name = learner if outer == "es" or learner.endswith(METAGRAD) else learner + METAGRAD
            if name not in names:
                names.append(name)
    return names


def base_learner(name: str) -> str:
    """``VSML-quickstart+metagrad`` -> ``VSML-quickstart``."""
    return name.removesuffix(METAGRAD)


def outer_loop(name: str) -> str:
    return "metagrad" if name.endswith(METAGRAD) else "es"


def episodes_per_generation(scale: dict) -> int:
    """ES: two episodes per antithetic pair."""
    return 2 * scale["pairs"]


def metagrad_steps(scale: dict, margin: float = 1.0) -> tuple[int, int]:
    """(meta-gradient steps at equal episodes, steps the run takes).

    An ES cell runs generations 0..G: G + 1 generations of 2P episodes. The run takes the
    equal-episodes steps times ``margin``, so that an equal-time step beyond them can still be
    reached where a meta-gradient step is the cheaper.
    """
    population = int(metagrad_overrides()["training.population_size"])
    equal = math.ceil((scale["generations"] + 1) * episodes_per_generation(scale) / population)
    return equal, max(equal, math.ceil(equal * margin))


def checkpoint_every(equal: int) -> int:
    """About :data:`STEP_CHECKPOINTS` step checkpoints up to ``equal``, one of them at ``equal`` itself."""
    return max(d for d in range(1, max(1, equal // STEP_CHECKPOINTS) + 1) if equal % d == 0)


def cell_overrides(scale: dict, margin: float) -> dict:
    """What a ``+metagrad`` cell changes on top of its ES cell: the outer loop and its step budget."""
    equal, steps = metagrad_steps(scale, margin)
    summary_every = 10 if steps >= 200 else 1  # as the ES cells: a metrics row every 10th step
    return {
        **metagrad_overrides(),
        "training.iterations": steps,
        # (no evaluation datasets: the meta-test does it; the last step is evaluated whatever the frequency)
        "evaluation.frequency": summary_every * math.ceil(steps / summary_every),
        "summary.frequency": summary_every,
        "checkpoint.frequency": checkpoint_every(equal),
        "checkpoint.with_step": True,
    }


def time_at_step(run_dir: Path, step: int) -> float | None:
    """Wall seconds since the run's start when ``step`` steps were done (metrics row ``step - 1``;
    between logged rows, interpolated)."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    rows = [(int(r["step"]), float(r["time"])) for r in read_metrics(run_dir) if "time" in r and "step" in r]
    if not rows:
        return None
    steps, times = zip(*rows)
    return float(np.interp(step - 1, steps, times))


def total_time(run_dir: Path) -> float | None:
    from vsml.runlog import read_metrics  # noqa: PLC0415

    times = [float(r["time"]) for r in read_metrics(run_dir) if "time" in r]
    return times[-1] if times else None


def step_checkpoint(run_dir: Path, step: int) -> Path | None:
    from vsml.checkpoint import step_checkpoints  # noqa: PLC0415

    return dict(step_checkpoints(run_dir)).get(step)


def equal_time_checkpoint(es_run_dir: Path, metagrad_run_dir: Path) -> dict | None:
    """The newest step checkpoint of the meta-gradient run reached within the ES run's wall time."""
    from vsml.checkpoint import step_checkpoints  # noqa: PLC0415

    budget = total_time(es_run_dir)
    if budget is None:
        return None
    reached = [
        (s, p) for s, p in step_checkpoints(metagrad_run_dir) if (time_at_step(metagrad_run_dir, s) or 0) <= budget
    ]
    if not reached:
        return None
    step, path = max(reached)
    last = max(s for s, _ in step_checkpoints(metagrad_run_dir))
    return {
        "step": step,
        "checkpoint": str(path),
        "es_time_s": budget,
        "metagrad_time_s": time_at_step(metagrad_run_dir, step),
        "capped": step == last,  # the run ended before ES's wall time: the margin was too small
    }


def meta_loss_against_time(run_dir: Path) -> tuple[list[float], list[float]]:
    """(wall seconds, meta-loss) of every metrics row."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    rows = [r for r in read_metrics(run_dir) if "time" in r and "meta_loss" in r]
    return [float(r["time"]) for r in rows], [float(r["meta_loss"]) for r in rows]


def meta_loss_at(run_dir: Path, step: int, window: int = 10) -> float | None:
    """Mean meta-loss of the last ``window`` metrics rows before ``step`` steps were done."""
    from vsml.runlog import read_metrics  # noqa: PLC0415

    losses = [float(r["meta_loss"]) for r in read_metrics(run_dir) if "meta_loss" in r and int(r["step"]) < step]
    return float(np.mean(losses[-window:])) if losses else None


# ----------------------------------------------------------------------------- the comparison


def seed_figures(record: dict, episodes_per_step: int, step_time) -> dict:
    """One meta-tested cell (one view of it): its own set against the unseen sets, per seed."""
    results = record["results"]
    own = record["train_set"]
    unseen = [t for t in results if t != own]
    run_dir = Path(record["run_dir"])
    step = int(record["generation"])
    return {
        "seed": record["seed"],
        "steps": step,
        "episodes": step * episodes_per_step,
        "wall_s": step_time(record),
        "meta_loss": meta_loss_at(run_dir, step),
        "own": float(np.mean(results[own]["episode_mean"])),
        "unseen": float(np.mean([np.mean(results[t]["episode_mean"]) for t in unseen])),
        "own_last": float(np.mean(results[own]["last_quarter"])),
        "unseen_last": float(np.mean([np.mean(results[t]["last_quarter"]) for t in unseen])),
        "by_seen_own": results[own]["by_seen"],
        "by_seen_mnist": results["mnist14"]["by_seen"] if "mnist14" in results and own != "mnist14" else None,
    }


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def summarise_view(figures: list[dict]) -> dict:
    keys = ("steps", "episodes", "wall_s", "meta_loss", "own", "unseen", "own_last", "unseen_last")
    summary = {
        k: spread([f[k] for f in figures if f[k] is not None]) for k in keys if any(f[k] is not None for f in figures)
    }
    summary["gap"] = spread([f["own"] - f["unseen"] for f in figures])
    summary["left_plateau"] = sum(f["meta_loss"] is not None and f["meta_loss"] < 0.9 * math.log(10) for f in figures)
    summary["seeds"] = sorted(f["seed"] for f in figures)
    for key in ("by_seen_own", "by_seen_mnist"):
        curves = [f[key] for f in figures if f[key] is not None]
        length = min((len(c) for c in curves), default=0)
        summary[key] = np.median([c[:length] for c in curves], axis=0).tolist() if curves else None
    return summary


def verdict(es: dict, metagrad: dict) -> str:
    """Does "meta-gradients fit, ES generalises" hold between two summarised views?"""
    fits = metagrad["own"]["median"] >= es["own"]["median"]
    generalises = es["unseen"]["median"] > metagrad["unseen"]["median"]
    separate = es["unseen"]["min"] > metagrad["unseen"]["max"]
    parts = [
        f"meta-gradients {'fit' if fits else 'do not fit'} the own set at least as well "
        f"({100 * metagrad['own']['median']:.1f} vs ES {100 * es['own']['median']:.1f})",
        f"ES {'generalises better' if generalises else 'does not generalise better'} to the unseen sets "
        f"({100 * es['unseen']['median']:.1f} vs {100 * metagrad['unseen']['median']:.1f}"
        + (", seeds' ranges apart" if separate else ", seeds' ranges overlap" if generalises else "")
        + ")",
    ]
    stuck = [
        f"{name} left the ln 10 plateau in {v['left_plateau']} of {len(v['seeds'])} seeds"
        for name, v in (("ES", es), ("meta-gradients", metagrad))
        if "left_plateau" in v and 2 * v["left_plateau"] < len(v["seeds"])
    ]
    if stuck:  # a learner that has not started to learn fits nothing and generalises nothing
        head = "not tested at this budget (" + ", ".join(stuck) + ")"
    elif fits and generalises and separate:
        head = "holds"
    elif fits and generalises:
        head = "holds in the medians only"
    else:
        head = "does not hold"
    return f"{head}: " + "; ".join(parts)


def comparison(es_records, episodes_records, time_records, scale: dict) -> dict:
    """``{learner: {train_set: {view: summary}}}`` for every learner with both outer loops."""
    population = int(metagrad_overrides()["training.population_size"])

    def es_time(r):
        return total_time(Path(r["run_dir"]))

    def mg_time(r):
        return r.get("metagrad_time_s") or time_at_step(Path(r["run_dir"]), int(r["generation"]))

    out: dict = {}
    for r in es_records:
        learner, train_set = r["learner"], r["train_set"]
        if learner + METAGRAD not in {m["learner"] for m in episodes_records}:
            continue
        out.setdefault(learner, {})[train_set] = None
    for learner, sets in out.items():
        for train_set in sets:

            def members(records, name, ts=train_set):
                return [m for m in records if m["learner"] == name and m["train_set"] == ts]

            views = {
                "ES": [seed_figures(m, episodes_per_generation(scale), es_time) for m in members(es_records, learner)],
                "meta-gradients, equal wall-clock": [
                    seed_figures(m, population, mg_time) for m in members(time_records, learner + METAGRAD)
                ],
                "meta-gradients, equal episodes": [
                    seed_figures(m, population, mg_time) for m in members(episodes_records, learner + METAGRAD)
                ],
            }
            sets[train_set] = {view: summarise_view(f) for view, f in views.items() if f}
    return out


def comparison_markdown(compared: dict, pct, seen_ks=(0, 1, 2, 3, 5)) -> str:
    lines = [
        "",
        "**ES against meta-gradients** (the same learner, set and presentation; meta-gradients: "
        "`configs/backprop.yaml`; equal wall-clock: the meta-gradient run's step checkpoint reached within "
        "the ES run's wall time, both timed from the start of the training loop (the step's compilation included); equal episodes: as many "
        "inner-loop episodes as ES's 2 per pair and generation). Accuracy in %, median [min–max] over seeds; "
        "unseen: the mean over every meta-test set but the own one; gap: own − unseen per seed; left: seeds "
        "whose meta-loss (mean of the last 10 rows) is below 0.9 ln 10",
        "",
        "| learner | meta-trained on | outer loop | steps | episodes | wall s | meta-loss | left | own (held out) "
        "| unseen | gap | own, last quarter | unseen, last quarter |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(s, fmt):
        return f"{s['median']:{fmt}} [{s['min']:{fmt}}–{s['max']:{fmt}}]" if s else "–"

    for learner, sets in compared.items():
        for train_set, views in sets.items():
            for view, v in views.items():
                lines.append(
                    f"| {learner} | {train_set} | {view} | {num(v.get('steps'), '.0f')} | "
                    f"{num(v.get('episodes'), '.0f')} | {num(v.get('wall_s'), '.0f')} | "
                    f"{num(v.get('meta_loss'), '.3f')} | {v['left_plateau']}/{len(v['seeds'])} | {pct(v['own'])} | "
                    f"{pct(v['unseen'])} | {pct(v['gap'])} | {pct(v['own_last'])} | {pct(v['unseen_last'])} |"
                )
    lines += [
        "",
        "**Introspection by outer loop** (accuracy in % against labelled examples of the class seen before, "
        "median over seeds; own: the held-out own set; mnist14: unseen)",
        "",
        "| learner | meta-trained on | outer loop | set | " + " | ".join(f"k = {k}" for k in seen_ks) + " |",
        "|---|---|---|---|" + "---|" * len(seen_ks),
    ]
    for learner, sets in compared.items():
        for train_set, views in sets.items():
            for view, v in views.items():
                for key, name in (("by_seen_own", train_set), ("by_seen_mnist", "mnist14")):
                    if v[key] is None:
                        continue
                    values = [f"{100 * v[key][k]:.1f}" if k < len(v[key]) else "–" for k in seen_ks]
                    lines.append(f"| {learner} | {train_set} | {view} | {name} | " + " | ".join(values) + " |")
    lines += ["", '**Verdict: "meta-gradients fit, ES generalises"** (medians over seeds)', ""]
    for learner, sets in compared.items():
        for train_set, views in sets.items():
            for view in ("meta-gradients, equal wall-clock", "meta-gradients, equal episodes"):
                if "ES" in views and view in views:
                    lines.append(
                        f"- {learner} on {train_set}, {view.split(', ')[1]}: {verdict(views['ES'], views[view])}."
                    )
    return "\n".join(lines) + "\n"


def plot_meta_loss_against_time(out: Path, runs: list[tuple[str, str, int, Path]]) -> Path:
    """``OUT/meta_loss_time.png``: meta-loss against wall time, a panel per learner, a line per seed."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    learners = sorted({base_learner(r[0]) for r in runs if r[0].endswith(METAGRAD)})
    fig, axes = plt.subplots(1, max(1, len(learners)), figsize=(5 * max(1, len(learners)), 3.6), squeeze=False)
    colors = {"es": "C0", "metagrad": "C1"}
    for ax, learner in zip(axes[0], learners):
        labelled = set()
        for name, train_set, _seed, run_dir in runs:
            if base_learner(name) != learner or run_dir is None:
                continue
            times, losses = meta_loss_against_time(run_dir)
            outer = outer_loop(name)
            label = f"{'ES' if outer == 'es' else 'meta-gradients'} ({train_set})"
            ax.plot(times, losses, color=colors[outer], linewidth=0.9, label=None if label in labelled else label)
            labelled.add(label)
        ax.axhline(math.log(10), color="gray", linewidth=0.8, label="ln 10")
        ax.set_title(learner)
        ax.set_xlabel("wall seconds since the training loop began")
        ax.legend(fontsize="small")
    axes[0, 0].set_ylabel("meta-loss (a line per seed)")
    fig.tight_layout()
    path = out / "meta_loss_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
