"""The claims matrix's figures (``bench/claims.py``): heatmap, learning curves, introspection."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.claims_matrix import HAND_DESIGNED, scale_of, test_sets  # noqa: E402


def finish_panel(ax, rows: list[dict], test_set: str, xlabel: str) -> None:
    """A figure panel's chance line (that of its meta-test set), title and x label."""
    chance = next((r["results"][test_set]["chance"] for r in rows if r["results"].get(test_set)), None)
    if chance is not None:
        ax.axhline(chance, color="gray", linewidth=0.8, label="chance")
    ax.set_title(test_set)
    ax.set_xlabel(xlabel)


def plot_figures(args, rows: list[dict], out: Path) -> list[Path]:
    """``heatmap.png``, ``learning_curves.png``, ``introspection.png`` under ``out``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tests = test_sets(args)
    paths = []

    # Figure 8-like: median episode-mean accuracy, rows learner x training set, columns meta-test sets.
    values = np.array(
        [[row["results"][t]["episode_mean"]["median"] if row["results"][t] else np.nan for t in tests] for row in rows]
    )  # NaN: not run (a fixed-size learner on a tabular set)
    fig, ax = plt.subplots(figsize=(1.1 * len(tests) + 3, 0.45 * len(rows) + 2))
    image = ax.imshow(100 * values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, row in enumerate(rows):
        for j, t in enumerate(tests):
            text = "–" if np.isnan(values[i, j]) else f"{100 * values[i, j]:.0f}"
            ax.text(j, i, text, ha="center", va="center", color="w" if not values[i, j] >= 0.6 else "k")
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
    names = list(dict.fromkeys(row["learner"] for row in rows))
    colors = dict(zip(names, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])))
    styles = dict(zip([*args.train_sets, "none"], ["-", "--", ":", "-.", (0, (1, 3))]))
    styles = {row["train_set"]: styles.get(row["train_set"], "-") for row in rows}
    ncols = 4
    nrows = math.ceil(len(tests) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    window = max(1, scale_of(args)["test_length"] // 20)
    for ax, t in zip(axes.flat, tests):
        for row in [r for r in rows if r["results"][t]]:
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
            if not row["results"][t] or not (
                row["learner"].startswith("VSML") or row["learner"] in HAND_DESIGNED or "algorithm" in row
            ):
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
