"""evaluation.json rendered: evaluation.md's tables, the comparison with the baseline, the
localisation, per-image tables and the serving cost."""

import os

from pipeline import branches as branches_lib
from tfrecords import fileio


def markdown(result: dict, title: str) -> str:
    def percent(value):
        return f"{100 * value:.2f}"

    split = f" of the {result['split']} split" if result.get("split") else ""
    warning = (
        [f"**Warning: {result['selection_warning']}.**", ""]
        if result.get("selection_warning")
        else []
    )
    lines = [
        f"# {title}",
        "",
        f"{result['num_images']} images{split}.",
        "",
        *warning,
        "| model | top-1 % | top-5 % | top-10 % |",
        "|---|---:|---:|---:|",
    ]
    rows = [("topology", result["topology"])]
    if "baseline" in result:
        rows = (
            [("baseline (original only)", result["baseline"])]
            + rows
            + [
                ("oracle: any branch right", result["oracle"]),
                ("ensemble: mean probability", result["ensemble"]),
            ]
            + [
                (f"branch {name} alone", result["branches"][name])
                for name in sorted(result["branches"], key=branches_lib.order)
            ]
        )
    lines.extend(
        f"| {name} | {percent(scores['top1'])} | {percent(scores['top5'])} | "
        f"{percent(scores['top10'])} |"
        for name, scores in rows
    )
    if "versus_baseline" in result:
        versus = result["versus_baseline"]
        low, high = versus["top1_difference_ci95"]
        lines += [
            "",
            "## Topology versus baseline",
            "",
            f"- Type A (topology right, baseline wrong): {versus['type_a']}",
            f"- Type B (baseline right, topology wrong): {versus['type_b']}",
            f"- exact McNemar p-value: {versus['mcnemar_exact_p']:.4g}",
            f"- top-1 difference: {percent(versus['top1_difference'])} points, bootstrap 95 % "
            f"interval [{percent(low)}, {percent(high)}]",
        ]
    else:
        lines += ["", f"Note: {result['note']}"]
    if "localisation" in result:
        found = result["localisation"]
        lines += [
            "",
            "## Localisation of the object view",
            "",
            f"{found['images']} images with a ground-truth box: "
            f"{percent(found['iou_at_least_0.5'])} % of the object boxes reach IoU >= 0.5, mean "
            f"IoU {found['mean_iou']:.3f} ({found['without_ground_truth']} images without one).",
        ]
    cost = result.get("cost", {})
    if "ms_per_image" in cost:
        timings = ", ".join(
            f"{ms:.1f} ms at batch {size} ({cost['images_per_second'][size]:.1f} images/s)"
            for size, ms in cost["ms_per_image"].items()
        )
        lines += [
            "",
            "## Serving cost",
            "",
            f"{passes(cost['backbone_passes'])} per image; through serving_default, "
            f"{timings} per image on {cost['device']}.",
        ]
    for image_id, table in result.get("images", {}).items():
        lines += [
            "",
            f"## {image_id}",
            "",
            f"True label: {table['true_label']}; baseline's top label: "
            f"{table['baseline_top_label']}; "
            f"topology's: {table['topology_top_label']}.",
            "",
            "| branch | true rank | true confidence | baseline-top rank | baseline-top confidence "
            "|",
            "|---|---:|---:|---:|---:|",
        ]
        lines.extend(
            f"| {name} | {row['true_rank']} | {row['true_confidence']:.4f} | "
            f"{row['baseline_top_rank']} | "
            f"{row['baseline_top_confidence']:.4f} |"
            for name, row in sorted(
                table["branches"].items(), key=lambda pair: branches_lib.order(pair[0])
            )
        )
    return "\n".join(lines) + "\n"


def passes(count: int) -> str:
    return f"{count} backbone pass{'' if count == 1 else 'es'}"


def write(result: dict, out_dir: str, title: str = "Evaluation") -> None:
    os.makedirs(out_dir, exist_ok=True)
    fileio.write_json_atomic(os.path.join(out_dir, "evaluation.json"), result)
    fileio.write_text_atomic(os.path.join(out_dir, "evaluation.md"), markdown(result, title))
