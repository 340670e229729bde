"""The claims matrix's report (``bench/claims.py``): tables, figures and ``report.json`` from the run folders.

Built from whatever ``metatest.json`` files exist, so ``--report-only`` rebuilds it at any time.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import claims_algorithm, claims_figures, claims_outer  # noqa: E402
from bench.claims_matrix import (  # noqa: E402
    COMMON,
    FIRST_STEPS,
    HAND_DESIGNED,
    META_TEST_SETS,
    TABULAR_TEST_SETS,
    cell_name,
    cells,
    image_sets,
    run_dir_of,
    scale_of,
    test_sets,
)
from bench.claims_metatest import write_json  # noqa: E402
from bench.claims_outer import spread  # noqa: E402


def load_results(args, file_name: str = "metatest.json") -> tuple[list[dict], list[dict]]:
    """Every ``file_name`` there is: (meta-learned cells of the matrix or the --algorithm's draws, hand-designed).

    Hand-designed results count when their episodes are this run's: the matrix's fixed ones, or
    one draw per seed with --algorithm.
    """
    out = Path(args.out)
    if args.algorithm:
        files = sorted(claims_algorithm.folder(args).glob(f"seed*/{file_name}"))
        learned = [r for r in map(load_json, files) if r["seed"] in args.seeds and r["algorithm"] == args.algorithm]
    else:
        wanted = {cell_name(*c) for c in cells(args)}
        learned = [load_json(p) for p in sorted(out.glob(f"runs/*/{file_name}")) if p.parent.name in wanted]
    hand = [load_json(p) for p in sorted(out.glob("hand/*/metatest.json"))]
    hand = [
        h
        for h in hand
        if h["seed"] in args.seeds
        and h["learner"] in args.hand_designed
        and h.get("draws", False) == bool(args.algorithm)
    ]
    return learned, hand


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def learned_row(args, learner: str, train_set: str, members: list[dict]) -> dict:
    """A meta-learned row: its figures per set (None where it did not run) and what its cells record."""
    row = {"learner": learner, "train_set": train_set, "seeds": sorted(r["seed"] for r in members)}
    row["meta_params"] = members[0]["meta_params"]
    row["results"] = {t: column(members, t) for t in test_sets(args)}
    if args.algorithm:
        row["algorithm"] = members[0]["algorithm"]
        row["generation"] = members[0]["generation"]
        row["seconds_per_generation"] = None
        return row
    speeds = [r["seconds_per_generation"] for r in members if r["seconds_per_generation"]]
    row["meta_loss_first"] = spread([r["meta_loss"]["first"] for r in members])
    row["meta_loss_last"] = spread([r["meta_loss"]["last"] for r in members])
    row["seconds_per_generation"] = spread(speeds) if speeds else None
    row["cells"] = [
        {"seed": r["seed"], "run_dir": r["run_dir"], "checkpoint": r["checkpoint"]}
        for r in sorted(members, key=lambda r: r["seed"])
    ]
    row["unseen"] = unseen_summary(members, [t for t in META_TEST_SETS if t != train_set])
    return row


def tabular_mean(row: dict) -> dict | None:
    """Per seed the mean over the tabular sets (episode mean, last quarter); median and min-max over seeds."""
    columns = [row["results"].get(t) for t in TABULAR_TEST_SETS]
    if not all(columns):
        return None
    return {
        key: spread([float(np.mean([c["per_seed"][key][s] for c in columns])) for s in columns[0]["per_seed"][key]])
        for key in ("episode_mean", "last_quarter")
    }


def table_rows(args, learned: list[dict], hand: list[dict]) -> list[dict]:
    """One row per learner x training set, or the --algorithm's; per hand-designed rule, its best rate per set."""
    rows = []
    if args.algorithm and learned:
        rows.append(learned_row(args, learned[0]["learner"], learned[0]["train_set"], learned))
    for learner in [] if args.algorithm else args.learners:
        for train_set in args.train_sets:
            members = [r for r in learned if r["learner"] == learner and r["train_set"] == train_set]
            if members:
                rows.append(learned_row(args, learner, train_set, members))
    for rule in HAND_DESIGNED:
        members = [h for h in hand if h["learner"] == rule]
        if not members:
            continue
        row = {"learner": rule, "train_set": "none", "meta_params": 0, "seconds_per_generation": None, "results": {}}
        row["seeds"] = sorted({h["seed"] for h in members})
        row["best_lr"] = {}
        by_lr: dict = {}
        for h in members:
            by_lr.setdefault(h["lr"], []).append(h)
        for test_set in test_sets(args):
            measured = [lr for lr in by_lr if all(test_set in h["results"] for h in by_lr[lr])]
            if not measured:  # results of an older run, before this set was added
                row["results"][test_set] = None
                continue
            best = max(
                measured,
                key=lambda lr: np.median([np.mean(h["results"][test_set]["episode_mean"]) for h in by_lr[lr]]),
            )
            row["best_lr"][test_set] = best
            row["results"][test_set] = column(by_lr[best], test_set)
        rows.append(row)
    for row in rows:
        row["tabular"] = tabular_mean(row)
    return rows


def column(members: list[dict], test_set: str) -> dict | None:
    """Median and min-max over seeds of one meta-test set's figures (each seed: mean over its episodes).

    None when a member has no results there (a fixed-size learner on a tabular set).
    """
    if not all(test_set in m["results"] for m in members):
        return None
    results = [m["results"][test_set] for m in members]
    per_seed = {
        key: {m["seed"]: float(np.mean(r[key])) for m, r in zip(members, results)}
        for key in ("episode_mean", "last_quarter")
    }
    return {
        "per_seed": per_seed,
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


def pct(s: dict | None) -> str:
    if s is None:
        return "–"
    return f"{100 * s['median']:.1f} [{100 * s['min']:.0f}–{100 * s['max']:.0f}]"


def describe_machine() -> str:
    import jax  # noqa: PLC0415

    from vsml.runtime import cpu_model  # noqa: PLC0415

    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"jax {jax.__version__}, Python {platform.python_version()}"
    )


def chance_of(rows: list[dict], test_set: str) -> float | None:
    """A set's chance level (1 / its classes), from any row that ran on it."""
    return next((r["results"][test_set]["chance"] for r in rows if r["results"].get(test_set)), None)


def header_lines(args, status: dict) -> list[str]:
    scale = scale_of(args)
    episodes = (
        f"{scale['test_episodes']} episodes of {scale['test_length']} steps per set"
        + (", a new draw of them per seed" if args.algorithm else ", the same episodes for every learner")
        + "; the image sets at 14x14x1 (mnist28: 28x28x1), 10 output units; the tabular sets as they are, "
        "standardised per feature, their own class count."
    )
    if args.algorithm:
        return [
            f"Algorithm: `{args.algorithm}` (no meta-training here), meta-tested beside the hand-designed rules on "
            f"{len(args.seeds)} episode draws (seeds {', '.join(map(str, args.seeds))}). Meta-test: {episodes}",
            f"Machine: {describe_machine()}."
            + (f" Wall time {status['wall_s'] / 60:.1f} min." if status.get("wall_s") else ""),
        ]
    return [
        f"Budget per meta-trained cell (every learner alike): {scale['generations']} ES generations x "
        f"{scale['pairs']} antithetic pairs x {scale['episode_length']}-step episodes "
        f"(scale '{'quick' if args.quick else args.scale}'); ES: centered-rank fitness, lr "
        f"{COMMON['optimizer.lr']}, noise_std {COMMON['optimizer.noise_std']}. Meta-test: {episodes}",
        f"Machine: {describe_machine()}.",
        f"Cells: {status['finished']} of {status['planned']} meta-trained cells meta-tested"
        + (f"; matrix wall time {status['wall_s'] / 60:.1f} min" if status.get("wall_s") else "")
        + ".",
    ]


def report_markdown(args, rows: list[dict], status: dict) -> str:
    tests = image_sets(args)
    lines = [
        *header_lines(args, status),
        "",
        "Accuracy in %: median [min–max] over seeds of each seed's mean over its meta-test episodes. "
        "SGD / Adam: online, batch 1, a fresh network per episode; LogReg: online logistic regression from zero "
        "weights; NCM: online nearest class mean (bench/online_baselines.py); each rule at the best learning rate "
        "of its grid per column (chosen on that column itself, so an upper bound). ★: the held-out split of the "
        "row's own meta-training set. –: not run (a fixed-size learner on a set of another input size).",
    ]
    for key, title in (("episode_mean", "Episode-mean accuracy"), ("last_quarter", "Last-quarter accuracy")):
        lines += ["", f"**{title}**", ""]
        lines.append("| learner | meta-trained on | " + " | ".join(tests) + " |")
        lines.append("|---|---|" + "---|" * len(tests))
        for row in rows:
            results = row["results"]
            cells_text = [pct(results[t] and results[t][key]) + (" ★" if t == row["train_set"] else "") for t in tests]
            lines.append(f"| {row['learner']} | {row['train_set']} | " + " | ".join(cells_text) + " |")
        chance = [f"{100 * c:.1f}" if (c := chance_of(rows, t)) else "–" for t in tests]
        lines.append("| chance | – | " + " | ".join(chance) + " |")
    lines += tabular_lines(rows)
    lines += (
        []
        if not any("unseen" in row for row in rows)
        else [
            "",
            "**Own set against unseen sets** (episode-mean / last-quarter accuracy in %; unseen: the mean over "
            "every image meta-test set of the matrix but the row's own, per seed, then median [min–max] over seeds)",
            "",
            "| learner | meta-trained on | own (held out), episode mean | unseen, episode mean | own, last quarter "
            f"| unseen, last quarter | own, first {FIRST_STEPS} steps |",
            "|---|---|---|---|---|---|---|",
        ]
    )
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
        for t in [t for t in shown if row["results"][t]]:
            by_seen = row["results"][t]["by_seen"]
            values = [f"{100 * by_seen[k]:.1f}" if k < len(by_seen) else "–" for k in seen_ks]
            lines.append(f"| {row['learner']} | {row['train_set']} | {t} | " + " | ".join(values) + " |")
    lines += learner_lines(rows)
    hand_rows = [r for r in rows if any(v is not None for v in r.get("best_lr", {}).values())]
    if hand_rows:
        lines += [
            "",
            "Best learning rate per meta-test set: "
            + "; ".join(
                f"{r['learner']}: " + ", ".join(f"{t} {v:g}" for t, v in r["best_lr"].items()) for r in hand_rows
            )
            + ".",
        ]
    if not args.algorithm:
        lines += ["", "**Run directories** (checkpoint.npz in each)", ""]
    for row in rows:
        for c in row.get("cells", []):
            lines.append(f"- {row['learner']} / {row['train_set']} / seed {c['seed']}: `{c['run_dir']}`")
    if args.algorithm and rows and "algorithm" in rows[0]:
        lines.append(claims_algorithm.verdict_markdown(algorithm_verdict(args, rows), rows[0]["learner"]))
    return "\n".join(lines) + "\n"


def tabular_lines(rows: list[dict]) -> list[str]:
    """The tabular sets' block: per set episode mean and last quarter, and their mean per seed (in %)."""
    sets = list(TABULAR_TEST_SETS)
    shown = [r for r in rows if any(r["results"].get(t) for t in sets)]
    if not shown:
        return []
    lines = [
        "",
        "**Tabular sets** (in %, as above; their own block, so the image columns and the unseen average below are "
        "the matrix's as before they were added; mean: per seed the mean over both sets, then median [min–max]; "
        "only learners that run on any input size)",
        "",
        "| learner | meta-trained on | "
        + " | ".join(f"{t}, episode mean | {t}, last quarter" for t in sets)
        + " | mean, episode mean | mean, last quarter |",
        "|---|---|" + "---|---|" * (len(sets) + 1),
    ]
    for row in shown:
        results = row["results"]
        figures = [pct(results[t] and results[t][k]) for t in sets for k in ("episode_mean", "last_quarter")]
        mean = row["tabular"] or {}
        figures += [pct(mean.get("episode_mean")), pct(mean.get("last_quarter"))]
        lines.append(f"| {row['learner']} | {row['train_set']} | " + " | ".join(figures) + " |")
    chance = [f"{100 * c:.1f}" if (c := chance_of(rows, t)) else "–" for t in sets for _ in range(2)]
    lines.append("| chance | – | " + " | ".join(chance) + " | – | – |")
    return lines


def learner_lines(rows: list[dict]) -> list[str]:
    lines = [
        "",
        "**Learners** (meta-loss: mean of the first / last 10 rows of metrics.jsonl, one every 10th generation; "
        "median [min–max] over seeds; "
        "ln 10 = 2.303 is the plateau of a learner that has not started to learn)",
        "",
        "| learner | meta-trained on | seeds | meta-parameters | s / generation | meta-loss first | meta-loss last |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speed = row["seconds_per_generation"]
        speed_text = (
            f"{speed['median']:.2f} [{speed['min']:.2f}–{speed['max']:.2f}]" if speed else "– (no meta-training)"
        )
        if "generation" in row:
            speed_text = f"– (given: generation {row['generation']})"
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
    return lines


def algorithm_verdict(args, rows: list[dict]) -> dict:
    """Issue 29's verdict for the --algorithm row against the SGD and Adam rows."""
    algorithm = rows[0]
    rivals = {r["learner"]: r for r in rows if r["learner"] in claims_algorithm.RIVALS}
    trained_on = algorithm["train_set"].split("+")
    unseen = claims_algorithm.unseen_sets(test_sets(args), trained_on, args.seen)
    return claims_algorithm.verdict(algorithm, rivals, unseen, scale_of(args)["test_length"])


def build_report(args, status: dict) -> tuple[Path, list[Path]]:
    learned, hand = load_results(args)
    rows = table_rows(args, learned, hand)
    status = {**status, "finished": len(learned), "planned": len(cells(args))}
    text = report_markdown(args, rows, status)
    out = claims_algorithm.folder(args) if args.algorithm else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = claims_figures.plot_figures(args, rows, out) if rows else []
    report = {"rows": rows, "status": status}
    if args.algorithm and rows and "algorithm" in rows[0]:
        report["verdict"] = algorithm_verdict(args, rows)
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
