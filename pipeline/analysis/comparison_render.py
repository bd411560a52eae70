"""comparison.json rendered: the verdict in one sentence, comparison.md with its tables, the plot.

The verdict names the winning arm and its branch set. It credits the ladder only for a set of the
photo and its JPEG re-encodings; a set with other views is named for what it holds, and with nested
sets the ablation says what each added family gave (pipeline.analysis.comparison).
"""

import os

import numpy as np

from pipeline import branches as branches_lib
from pipeline import plots
from pipeline.analysis import comparison
from tfrecords import fileio


def _percent(value) -> str:
    return f"{100 * value:.2f}"


def _interval(entry: dict) -> str:
    low, high = entry["ci95"]
    covers = " (includes 0)" if low <= 0 <= high else ""
    return f"[{100 * low:+.2f}, {100 * high:+.2f}]{covers}"


def _ladder_only(result: dict, arm: str) -> bool:
    names = result["arms"][arm].get("branches")
    if names is None:  # made before arms named their branches: the ladder's question
        return result.get("question", comparison.LADDER_QUESTION) == comparison.LADDER_QUESTION
    return comparison.named_families(names) == [branches_lib.LADDER]


def _what(result: dict, arm: str) -> str:
    """An arm as the verdict names it: with the branches it holds when it holds more than the
    ladder."""
    names = result["arms"][arm].get("branches")
    if not names or _ladder_only(result, arm):
        return arm
    return f"{arm} (branches: {', '.join(comparison.named_families(names))})"


def verdict(result: dict) -> str:
    """The answer in one sentence."""
    versus = result["versus_baseline"]
    if not versus:
        return "compare: only the baseline was trained."
    best = (result.get("winner") or {}).get("arm") or max(
        versus, key=lambda arm: versus[arm]["difference_mean"]
    )
    entry = versus[best]
    low, high = entry["ci95"]
    difference = 100 * entry["difference_mean"]
    where = f"on the {result['split']} split ({result['num_images']} images)"
    what = _what(result, best)
    if low > 0:
        if _ladder_only(result, best):
            answer = f"the ladder helps: {best} beats the baseline by {difference:+.2f} points"
        else:
            answer = (
                f"{what} wins: it beats the baseline (the original alone) by {difference:+.2f} "
                "points"
            )
    elif high < 0:
        answer = (
            f"no arm helps: even the best, {what}, trails the baseline by {difference:+.2f} points"
        )
    else:
        answer = (
            f"no clear effect: the best arm, {what}, differs from the baseline by "
            f"{difference:+.2f} points"
        )
    parts = [
        f"{_percent(row['difference_mean'])} points from {row['added']} over {row['to']} "
        f"{_interval(row)}"
        for row in result.get("ablation", ())
        if row["arm"] == best and row["over"] != comparison.BASELINE
    ]
    shares = f"; of that, {'; '.join(parts)}" if parts else ""
    caveats = ""
    capped = [arm for arm, arm_entry in result["arms"].items() if arm_entry["capped"]]
    if capped:
        caveats += f"; WARNING: {', '.join(capped)} hit the epoch cap while still improving"
    if result["split"] != "test":
        caveats += (
            "; these figures come from the split used for model selection (the records "
            "have no test split)"
        )
    return (
        f"compare: {answer} {where}, 95 % interval {_interval(entry)}, "
        f"McNemar p = {entry['p_value']:.3g}{shares}{caveats}."
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]  # str.capitalize() would lower-case "McNemar"


def _gap(entry: dict) -> str:
    """The share of the oracle gap an arm closes, as it reads: above the oracle, by how much."""
    if entry["oracle_gap_closed"] is None:
        return ""
    if entry.get("beyond_oracle", 0) > 0:
        return f"100 % and {_percent(entry['beyond_oracle'])} points beyond the oracle"
    return f"{100 * entry['oracle_gap_closed']:.0f} %"


def _chosen(entry: dict) -> str:
    """What an arm chose on validation: its L2 strength when solved, else its learning rate."""
    if entry.get("solver"):
        values = sorted(set(entry["solver"]["l2"]))
        return "solved, L2 " + ", ".join(f"{value:.3g}" for value in values)
    rate = entry.get("learning_rate")
    return "" if rate is None else f"{rate:g}"


def _table(arms: dict, versus_baseline: dict) -> list[str]:
    lines = [
        "| arm | top-1 % (mean ± sd) | top-5 % | seeds | learning rate or L2 | difference vs "
        "baseline | 95 % interval | p | oracle gap closed | training s per seed "
        "| stages ended by |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for arm, entry in arms.items():
        versus = versus_baseline.get(arm)
        compared = (
            f"{_percent(versus['difference_mean'])} | [{_percent(versus['ci95'][0])}, "
            f"{_percent(versus['ci95'][1])}] | {versus['p_value']:.3g}"
            if versus
            else " | | "
        )
        lines.append(
            f"| {arm} | {_percent(entry['top1_mean'])} ± {_percent(entry['top1_std'])} | "
            f"{_percent(entry['top5_mean'])} | {len(entry['top1'])} | {_chosen(entry)} "
            f"| {compared} | {_gap(entry)} | {np.mean(entry.get('seconds') or [np.nan]):.0f} | "
            + ("**epoch cap while improving** " if entry["capped"] else "")
            + "; ".join(",".join(stages) for stages in entry["ended_by"])
            + " |"
        )
    return lines


def _costs(arms: dict) -> list[str]:
    """Each arm's accuracy beside what its export costs to serve."""
    timed = {
        arm: entry["cost"] for arm, entry in arms.items() if "ms_per_image" in entry.get("cost", {})
    }
    if not timed:
        return []
    sizes = list(next(iter(timed.values()))["ms_per_image"])
    device = next(iter(timed.values())).get("device", "")
    lines = [
        "",
        "## Accuracy and serving cost",
        "",
        f"Each arm's export through its serving_default on {device}: encoded images in, as a "
        "client sends them (pipeline.analysis.serving_cost).",
        "",
        "| arm | top-1 % | backbone passes per image | "
        + " | ".join(f"ms per image at batch {size}" for size in sizes)
        + " |",
        "|---|---:|---:|" + "---:|" * len(sizes),
    ]
    lines += [
        f"| {arm} | {_percent(arms[arm]['top1_mean'])} | {cost['backbone_passes']} | "
        + " | ".join(f"{cost['ms_per_image'][size]:.1f}" for size in sizes)
        + " |"
        for arm, cost in timed.items()
    ]
    return lines


def _ablation(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "## What each family adds",
        "",
        "Each row: an arm against the arm of the same fusion whose branch set lacks one family.",
        "",
        "| added | to | arm | over | difference (points) | 95 % interval | p |",
        "|---|---|---|---|---:|---|---:|",
    ]
    lines += [
        f"| {row['added']} | {row['to']} | {row['arm']} | {row['over']} | "
        f"{_percent(row['difference_mean'])} | {_interval(row)} | {row['p_value']:.3g} |"
        for row in rows
    ]
    return lines


def markdown(result: dict) -> str:
    recipe = result.get("recipe")
    lines = [
        f"# {result.get('question', comparison.LADDER_QUESTION)}",
        "",
        _sentence(verdict(result).removeprefix("compare: ")),
        "",
        f"Scored on the **{result['split']}** split, {result['num_images']} images; oracle (any "
        f"branch of the baseline model right) top-1 {_percent(result['oracle_top1'])} %."
        + "".join(
            f" Oracle of the set {label} ({', '.join(entry['branches'])}): "
            f"{_percent(entry['oracle_top1'])} %."
            for label, entry in (result.get("branch_sets") or {}).items()
        )
        + (f" Every arm trained by the **{recipe}** recipe." if recipe else "")
        + (f" Solved arms: {result['solver']}." if result.get("solver") else ""),
        "",
        *_table(result["arms"], result["versus_baseline"]),
        *_ablation(result.get("ablation") or []),
        *_costs(result["arms"]),
        "",
        "Interval: bootstrap over the test images (paired) and over each arm's seeds, so "
        "seed-to-seed spread counts. p: exact McNemar test over images with the seeds pooled per "
        "image, which does not see that spread. The verdict follows the interval. A solved arm is "
        "deterministic: one run stands for every seed.",
    ]
    if result.get("refit"):
        lines += [
            "",
            "## Refit: each arm trained again on train + validation with its selected schedule",
            "",
            "The same arms, the same test images; these models saw the validation images too, so "
            "nothing was chosen on them.",
            "",
            *_table(result["refit"]["arms"], result["refit"]["versus_baseline"]),
        ]
    if result["split"] != "test":
        lines += [
            "",
            "**These figures come from the validation split, which also chose the checkpoints and "
            "the learning rates: they are optimistic. Make records with a test split.**",
        ]
    lines += ["", "![top-1 per arm](comparison.png)", ""]
    return "\n".join(lines)


def _plot(result: dict, path: str) -> None:
    arms = list(result["arms"])
    figure, axes = plots.figure(figsize=(max(7, 1.2 * len(arms)), 4))
    means = [100 * result["arms"][arm]["top1_mean"] for arm in arms]
    errors = [100 * result["arms"][arm]["top1_std"] for arm in arms]
    bars = axes.bar(arms, means, yerr=errors, capsize=4, color=["gray"] + ["C0"] * (len(arms) - 1))
    capped = [bar for bar, arm in zip(bars, arms) if result["arms"][arm]["capped"]]
    for bar in capped:  # still improving at the cap: not trained to its best
        bar.set(hatch="//", edgecolor="red")
    if capped:
        capped[0].set_label("hit the epoch cap while improving")
    for arm_index, arm in enumerate(arms):
        axes.scatter(
            [arm_index] * len(result["arms"][arm]["top1"]),
            [100 * value for value in result["arms"][arm]["top1"]],
            color="black",
            s=10,
            zorder=3,
        )
    axes.axhline(
        100 * result["oracle_top1"], linestyle=":", color="green", label="oracle (any branch right)"
    )
    axes.set_ylabel(f"{result['split']} top-1 % (bars: mean ± sd; dots: seeds)")
    axes.tick_params(axis="x", labelrotation=20)
    low = min(min(100 * value for value in result["arms"][arm]["top1"]) for arm in arms)
    axes.set_ylim(max(0, low - 10), min(100, 100 * result["oracle_top1"] + 5))
    axes.legend(fontsize=8)
    plots.save(figure, path)


def write(result: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    fileio.write_json_atomic(os.path.join(out_dir, "comparison.json"), result)
    _plot(result, os.path.join(out_dir, "comparison.png"))
    fileio.write_text_atomic(os.path.join(out_dir, "comparison.md"), markdown(result))
