"""pruning.json rendered: the summary line, pruning.md and the plot against neurons and FLOPs."""

import numpy as np

from pipeline import plots
from pipeline.config import analysis as analysis_config
from pipeline.training import metrics


def summary_text(result: dict) -> str:
    cycle = result["cycles"][result["inflection_cycle"]]
    first = result["cycles"][0]
    return (
        f"jpeg-ladder-prune ({result['method']}): {first['neurons']} -> {cycle['neurons']} "
        f"neurons at the inflection (cycle {result['inflection_cycle']}), {cycle['flops']:,} of "
        f"{first['flops']:,} FLOPs left; "
        f"validation top-1 {100 * first['validation_top1']:.2f} -> "
        f"{100 * cycle['validation_top1']:.2f} %, "
        f"test top-1 {100 * first['test_top1']:.2f} -> {100 * cycle['test_top1']:.2f} %; "
        f"{len(result['cycles']) - 1} cycles ({result.get('recipe', 'thesis')} recipe), peak "
        f"memory {result.get('peak_memory_mib', float('nan')):.0f} MiB"
        + (
            ""
            if cycle["test_split"] == "test"
            else " (no test split: test figures are validation's)"
        )
    )


def markdown(result: dict, source: dict, config: analysis_config.PruneConfig) -> str:
    first = result["cycles"][0]
    test_name = (
        "test" if first["test_split"] == "test" else "validation (the records have no test split)"
    )
    lines = [
        f"# Pruning by distinctiveness: {result['method']}",
        "",
        f"Head {result['input_size']}-{first['neurons']}-{result['num_classes']} from "
        f"{source.get('run') or source['records']} (fusion {source['fusion']}); merge rule "
        f"`{config.merge}`, {config.steps_per_cycle} selection(s) per cycle, fine-tuning with "
        "early stopping on validation "
        f"(patience {config.fit.patience}).",
        "",
        "FLOPs follow the papers: fan-in + fan-out + 2 per hidden neuron; multiply-adds count the "
        "two layers' products only.",
        f'The "test" columns are measured on {test_name}.',
        "",
        *(
            [
                f"Fusion {source['fusion']}: scores here are the plain mean of the branches' "
                "probabilities (the run's learned branch weights are not applied).",
                "",
            ]
            if source["fusion"] in ("weighted", "gated")
            else []
        ),
        f"Inflection: cycle {result['inflection_cycle']}, the last before validation top-1 falls "
        f"more than {100 * config.tolerance:g} points below "
        + (
            "the best of the cycles before"
            if result["inflection_reference"] == "best"
            else "cycle 0"
        )
        + f" ({config.inflection_patience} cycle(s) in a row); fine-tuning by the "
        f"{result['recipe']} recipe. Peak memory {result['peak_memory_mib']:.0f} MiB.",
        "",
        "| cycle | neurons | FLOPs | multiply-adds | validation top-1 | top-5 | top-10 "
        "| test top-1 | top-5 | top-10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, cycle in enumerate(result["cycles"]):
        marker = " (inflection)" if index == result["inflection_cycle"] else ""
        lines.append(
            f"| {index}{marker} | {cycle['neurons']} | {cycle['flops']:,} | "
            f"{cycle['multiply_adds']:,} | "
            + metrics.percent_cells(cycle)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    """Top-1 against neurons removed and against FLOPs removed, the inflection marked."""

    cycles = result["cycles"]
    removed = np.array([cycles[0]["neurons"] - cycle["neurons"] for cycle in cycles])
    flops_removed = np.array([cycles[0]["flops"] - cycle["flops"] for cycle in cycles])
    figure, axes = plots.figure(1, 2, figsize=(10, 4), sharey=True)
    for axis, x_values, label in (
        (axes[0], removed, "hidden neurons removed"),
        (axes[1], flops_removed, "FLOPs removed (fan-in + fan-out + 2 per neuron)"),
    ):
        for key, name in (
            ("validation_top1", "validation"),
            ("test_top1", cycles[0]["test_split"]),
        ):
            axis.plot(
                x_values, [100 * cycle[key] for cycle in cycles], marker=".", label=f"{name} top-1"
            )
        axis.axvline(
            x_values[result["inflection_cycle"]], color="grey", linestyle="--", label="inflection"
        )
        axis.set_xlabel(label)
    axes[0].set_ylabel("top-1 (%)")
    axes[0].legend()
    figure.suptitle(f"Pruning by distinctiveness ({result['method']})")
    plots.save(figure, path)
