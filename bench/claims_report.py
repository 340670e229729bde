"""The claims matrix's report (``bench/claims.py``): tables, figures and ``report.json`` from the run folders.

Built from whatever ``metatest.json`` files exist, so ``--report-only`` rebuilds it at any time.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_outer  # noqa: E402
from bench.claims_matrix import (  # noqa: E402
    COMMON,
    FIRST_STEPS,
    HAND_DESIGNED,
    META_TEST_SETS,
    cell_name,
    cells,
    run_dir_of,
    scale_of,
)
from bench.claims_metatest import write_json  # noqa: E402


def load_results(args, file_name: str = "metatest.json") -> tuple[list[dict], list[dict]]:
    """Every ``file_name`` there is: (meta-learned cells of the matrix, hand-designed cells)."""
    out = Path(args.out)
    wanted = {cell_name(*c) for c in cells(args)}
    learned = [json.loads(p.read_text()) for p in sorted(out.glob(f"runs/*/{file_name}")) if p.parent.name in wanted]
    hand = [json.loads(p.read_text()) for p in sorted(out.glob("hand/*/metatest.json"))]
    hand = [h for h in hand if h["seed"] in args.seeds and h["learner"] in args.hand_designed]
    return learned, hand


def spread(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def table_rows(args, learned: list[dict], hand: list[dict]) -> list[dict]:
    """One row per learner x training set (and per hand-designed rule, its best rate per column)."""
    rows = []
    for learner in args.learners:
        for train_set in args.train_sets:
            members = [r for r in learned if r["learner"] == learner and r["train_set"] == train_set]
            if not members:
                continue
            row = {"learner": learner, "train_set": train_set, "seeds": sorted(r["seed"] for r in members)}
            row["meta_params"] = members[0]["meta_params"]
            speeds = [r["seconds_per_generation"] for r in members if r["seconds_per_generation"]]
            row["meta_loss_first"] = spread([r["meta_loss"]["first"] for r in members])
            row["meta_loss_last"] = spread([r["meta_loss"]["last"] for r in members])
            row["seconds_per_generation"] = spread(speeds) if speeds else None
            row["cells"] = [
                {"seed": r["seed"], "run_dir": r["run_dir"], "checkpoint": r["checkpoint"]}
                for r in sorted(members, key=lambda r: r["seed"])
            ]
            row["results"] = {t: column(members, t) for t in META_TEST_SETS}
            row["unseen"] = unseen_summary(members, [t for t in META_TEST_SETS if t != train_set])
            rows.append(row)
    for rule in HAND_DESIGNED:
        members = [h for h in hand if h["learner"] == rule]
        if not members:
            continue
        row = {"learner": rule, "train_set": "none", "meta_params": 0, "seconds_per_generation": None, "results": {}}
        row["seeds"] = sorted({h["seed"] for h in members})
        row["best_lr"] = {}
        for test_set in META_TEST_SETS:
            by_lr = {}
            for h in members:
                by_lr.setdefault(h["lr"], []).append(h)
            best = max(
                by_lr, key=lambda lr: np.median([np.mean(h["results"][test_set]["episode_mean"]) for h in by_lr[lr]])
            )
            row["best_lr"][test_set] = best
            row["results"][test_set] = column(by_lr[best], test_set)
        rows.append(row)
    return rows


def column(members: list[dict], test_set: str) -> dict:
    """Median and min-max over seeds of one meta-test set's figures (each seed: mean over its episodes)."""
    results = [m["results"][test_set] for m in members]
    return {
        "episode_mean": spread([float(np.mean(r["episode_mean"])) for r in results]),
        "first_steps": spread([float(np.mean(r["curve"][:FIRST_STEPS])) for r in results]),
        "last_quarter": spread([float(np.mean(r["last_quarter"])) for r in results]),
        "curve": np.median([r["curve"] for r in results], axis=0).tolist(),
        "by_seen": median_ragged([r["by_seen"] for r in results]),
        "by_seen_count": results[0]["by_seen_count"],
        "chance": 1.0 / results[0]["classes"],
    }


def unseen_summary(members: list[dict], test_sets: list[str]) -> dict:
    """Per seed, the mean over ``test_sets`` of its accuracy there; median and min-max over seeds."""
    return {
        key: spread([float(np.mean([np.mean(m["results"][t][key]) for t in test_sets])) for m in members])
        for key in ("episode_mean", "last_quarter")
    }


def median_ragged(lists: list[list[float]]) -> list[float]:
    length = min(len(x) for x in lists)
    return np.median([x[:length] for x in lists], axis=0).tolist()


def pct(s: dict) -> str:
    return f"{100 * s['median']:.1f} [{100 * s['min']:.0f}–{100 * s['max']:.0f}]"


def describe_machine() -> str:
    import jax  # noqa: PLC0415

    from vsml.runtime import cpu_model  # noqa: PLC0415

    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"jax {jax.__version__}, Python {platform.python_version()}"
    )


def report_markdown(args, rows: list[dict], status: dict) -> str:
    scale = scale_of(args)
    tests = list(META_TEST_SETS)
    lines = [
        f"Budget per meta-trained cell (every learner alike): {scale['generations']} ES generations x "
        f"{scale['pairs']} antithetic pairs x {scale['episode_length']}-step episodes "
        f"(scale '{'quick' if args.quick else args.scale}'); ES: centered-rank fitness, lr "
        f"{COMMON['optimizer.lr']}, noise_std {COMMON['optimizer.noise_std']}. Meta-test: "
        f"{scale['test_episodes']} episodes of {scale['test_length']} steps per set, the same episodes for every "
        "learner; every set at 14x14x1, 10 output units.",
        f"Machine: {describe_machine()}.",
        f"Cells: {status['finished']} of {status['planned']} meta-trained cells meta-tested"
        + (f"; matrix wall time {status['wall_s'] / 60:.1f} min" if status.get("wall_s") else "")
        + ".",
        "",
        "Accuracy in %: median [min–max] over seeds of each seed's mean over its meta-test episodes. "
        "SGD / Adam: online, batch 1, a fresh network per episode, the best learning rate of the grid per "
        "column (chosen on that column itself, so an upper bound). ★: the held-out split of the row's own "
        "meta-training set.",
    ]
    for key, title in (("episode_mean", "Episode-mean accuracy"), ("last_quarter", "Last-quarter accuracy")):
        lines += ["", f"**{title}**", ""]
        lines.append("| learner | meta-trained on | " + " | ".join(tests) + " |")
        lines.append("|---|---|" + "---|" * len(tests))
        for row in rows:
            cells_text = [pct(row["results"][t][key]) + (" ★" if t == row["train_set"] else "") for t in tests]
            lines.append(f"| {row['learner']} | {row['train_set']} | " + " | ".join(cells_text) + " |")
        chance = [f"{100 * rows[0]['results'][t]['chance']:.1f}" for t in tests] if rows else []
        lines.append("| chance | – | " + " | ".join(chance) + " |")
    lines += [
        "",
        "**Own set against unseen sets** (episode-mean / last-quarter accuracy in %; unseen: the mean over "
        "every meta-test set but the row's own, per seed, then median [min–max] over seeds)",
        "",
        "| learner | meta-trained on | own (held out), episode mean | unseen, episode mean | own, last quarter "
        f"| unseen, last quarter | own, first {FIRST_STEPS} steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "unseen" not in row:
            continue
        own = row["results"][row["train_set"]]
        lines.append(
            f"| {row['learner']} | {row['train_set']} | {pct(own['episode_mean'])} | "
            f"{pct(row['unseen']['episode_mean'])} | {pct(own['last_quarter'])} | {pct(row['unseen']['last_quarter'])} "
            f"| {pct(own['first_steps'])} |"
        )
    seen_ks = [0, 1, 2, 3, 5, 10]
    shown = [t for t in ("mnist14", "digits", "mnist14-newproj") if t in tests]
    lines += [
        "",
        "**Accuracy against labelled examples of the class seen before** (in %, median over seeds; the "
        "introspection figure): every step of every meta-test episode grouped by how many earlier steps of "
        "that episode carried its label",
        "",
        "| learner | meta-trained on | meta-test set | " + " | ".join(f"k = {k}" for k in seen_ks) + " |",
        "|---|---|---|" + "---|" * len(seen_ks),
    ]
    for row in rows:
        for t in shown:
            by_seen = row["results"][t]["by_seen"]
            values = [f"{100 * by_seen[k]:.1f}" if k < len(by_seen) else "–" for k in seen_ks]
            lines.append(f"| {row['learner']} | {row['train_set']} | {t} | " + " | ".join(values) + " |")
    lines += [
        "",
        "**Learners** (meta-loss: mean of the first / last 10 rows of metrics.jsonl, one every 10th generation; "
        "median [min–max] over seeds; "
        "ln 10 = 2.303 is the plateau of a learner that has not started to learn)",
        "",
        "| learner | meta-trained on | seeds | meta-parameters | s / generation | meta-loss first | meta-loss last |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for row in rows:
        speed = row["seconds_per_generation"]
        speed_text = (
            f"{speed['median']:.2f} [{speed['min']:.2f}–{speed['max']:.2f}]" if speed else "– (no meta-training)"
        )
        params = f"{row['meta_params']:,}" if row["meta_params"] else "0 (hand-designed)"
        seeds = ", ".join(map(str, row["seeds"]))
        losses = [
            f"{row[k]['median']:.3f} [{row[k]['min']:.3f}–{row[k]['max']:.3f}]" if k in row else "–"
            for k in ("meta_loss_first", "meta_loss_last")
        ]
        lines.append(
            f"| {row['learner']} | {row['train_set']} | {seeds} | {params} | {speed_text} | "
            + " | ".join(losses)
            + " |"
        )
    hand_rows = [r for r in rows if "best_lr" in r]
    if hand_rows:
        lines += [
            "",
            "Best learning rate per meta-test set: "
            + "; ".join(f"{r['learner']}: " + ", ".join(f"{t} {r['best_lr'][t]:g}" for t in tests) for r in hand_rows)
            + ".",
        ]
    lines += ["", "**Run directories** (checkpoint.npz in each)", ""]
    for row in rows:
        for c in row.get("cells", []):
            lines.append(f"- {row['learner']} / {row['train_set']} / seed {c['seed']}: `{c['run_dir']}`")
    return "\n".join(lines) + "\n"


def finish_panel(ax, rows: list[dict], test_set: str, xlabel: str) -> None:
    """A figure panel's chance line (that of its meta-test set), title and x label."""
    if rows:
        ax.axhline(rows[0]["results"][test_set]["chance"], color="gray", linewidth=0.8, label="chance")
    ax.set_title(test_set)
    ax.set_xlabel(xlabel)


def plot_figures(args, rows: list[dict]) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out = Path(args.out)
    tests = list(META_TEST_SETS)
    paths = []

    # Figure 8-like: median episode-mean accuracy, rows learner x training set, columns meta-test sets.
    values = np.array([[row["results"][t]["episode_mean"]["median"] for t in tests] for row in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(tests) + 3, 0.45 * len(rows) + 2))
    image = ax.imshow(100 * values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(rows):
        for j, t in enumerate(tests):
            ax.text(
                j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", color="w" if values[i, j] < 0.6 else "k"
            )
            if t == row["train_set"]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(tests)), tests, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r['learner']} ← {r['train_set']}" for r in rows])
    ax.set_xlabel("meta-test set")
    ax.set_title("Median episode-mean accuracy (%) over seeds; red: own meta-training set (held out)")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    paths.append(out / "heatmap.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # Learning curves per meta-test set: colour = learner, line style = meta-training set.
    colors = dict(zip([*args.learners, *HAND_DESIGNED], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    styles = dict(zip([*args.train_sets, "none"], ["-", "--", ":", "-.", (0, (1, 3))]))
    ncols = 4
    nrows = math.ceil(len(tests) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    window = max(1, scale_of(args)["test_length"] // 20)
    for ax, t in zip(axes.flat, tests):
        for row in rows:
            curve = np.convolve(row["results"][t]["curve"], np.ones(window) / window, mode="valid")
            ax.plot(
                curve,
                color=colors[row["learner"]],
                linestyle=styles[row["train_set"]],
                label=f"{row['learner']} ← {row['train_set']}",
            )
        finish_panel(ax, rows, t, "step in episode")
    for ax in axes.flat[len(tests) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy")
    fig.suptitle(f"Online accuracy per step (median over seeds of the episode mean, {window}-step running mean)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize="small")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 5), 1, 1))
    paths.append(out / "learning_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # Introspection: accuracy on an example vs labelled examples of its class seen before it, same episodes.
    shown = [t for t in ("mnist14", "digits", "mnist14-newproj") if t in tests]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.5), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], shown):
        for row in rows:
            if not row["learner"].startswith("VSML") and row["learner"] not in HAND_DESIGNED:
                continue
            ys = row["results"][t]["by_seen"]
            counts = row["results"][t]["by_seen_count"]
            keep = [k for k in range(len(ys)) if counts[k] >= 20]  # enough steps for a mean
            ax.plot(
                keep,
                [ys[k] for k in keep],
                marker="o",
                color=colors[row["learner"]],
                linestyle=styles[row["train_set"]],
                label=f"{row['learner']} ← {row['train_set']}",
            )
        finish_panel(ax, rows, t, "labelled examples of this class seen before")
    axes[0, 0].set_ylabel("accuracy (median over seeds)")
    axes[0, -1].legend(fontsize="small")
    fig.tight_layout()
    paths.append(out / "introspection.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def build_report(args, status: dict) -> tuple[Path, list[Path]]:
    learned, hand = load_results(args)
    rows = table_rows(args, learned, hand)
    status = {**status, "finished": len(learned), "planned": len(cells(args))}
    text = report_markdown(args, rows, status)
    out = Path(args.out)
    figures = plot_figures(args, rows) if rows else []
    report = {"rows": rows, "status": status}
    if any(claims_outer.outer_loop(r["learner"]) == "metagrad" for r in rows):
        equal_time = load_results(args, claims_outer.EQUAL_TIME_FILE)[0]
        es = [r for r in learned if claims_outer.outer_loop(r["learner"]) == "es"]
        compared = claims_outer.comparison(es, [r for r in learned if r not in es], equal_time, scale_of(args))
        text += claims_outer.comparison_markdown(compared, pct)
        report["outer_loops"] = compared
        runs = [(*c, run_dir_of(args, c)) for c in cells(args)]
        figures.append(claims_outer.plot_meta_loss_against_time(out, runs))
    (out / "report.md").write_text(text)
    write_json(out / "report.json", report)
    return out / "report.md", figures
