"""One Markdown report with PNG plots: the analyses that let a researcher judge the idea.

Accuracy versus quality, one curve per codec; best top-1 per training stage (thesis Figure 4.2);
zero fraction per node (Table 4.1); bytes per node and shard sizes (Table 4.2); timings (Table 4.3);
the dataset's JPEG quality-factor histogram (Figure 3.1). REPORT/report.json holds every number
shown.
"""

import json
import os

import PIL.Image

from pipeline import branches as branches_lib
from pipeline import plots
from pipeline.analysis import evaluate_render
from pipeline.config import analysis as analysis_config
from pipeline.offline import jpeg_quality
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import tensorboard_logs
from tfrecords import fileio
from tfrecords import manifest as manifest_lib


def _percent(value) -> str:
    return f"{100 * value:.2f}"


def _save(figure, directory, name) -> str:
    plots.save(figure, os.path.join(directory, name))
    return name


def curves(branch_names) -> dict[str, list[int]]:
    """{codec: its qualities among the branch names, ascending}, codecs in --codecs' choices' order
    (jpeg, jpeg2000, webp, avif), whatever order the names come in (evaluation.json lists them
    sorted as text: q10, q100, q20, ...)."""
    found: dict[str, list[int]] = {}
    for name in branch_names:
        if coded := branches_lib.coded(name):
            found.setdefault(coded[0], []).append(coded[1])
    return {codec: sorted(found[codec]) for codec in branches_lib.CODECS if codec in found}


def accuracy_per_codec(evaluation: dict) -> dict:
    """{codec: {quality: {top1, top5}}}: each re-encoding's branch alone, one curve per codec."""
    branches = evaluation.get("branches") or {}
    names = {branches_lib.coded(name): name for name in branches if branches_lib.coded(name)}
    return {
        codec: {
            str(quality): {
                metric: branches[names[codec, quality]][metric] for metric in ("top1", "top5")
            }
            for quality in qualities
        }
        for codec, qualities in curves(branches).items()
    }


def _accuracy_versus_quality(evaluation: dict, directory: str):
    branches = evaluation.get("branches")
    per_codec = accuracy_per_codec(evaluation)
    if not per_codec:
        return None
    figure, axes = plots.figure(figsize=(7, 4))
    for (codec, points), color in zip(per_codec.items(), plots.colors()):
        qualities = [int(quality) for quality in points]
        for metric, marker, style in (("top1", "o", "-"), ("top5", "s", "-.")):
            axes.plot(
                qualities,
                [100 * point[metric] for point in points.values()],
                marker=marker,
                linestyle=style,
                color=color,
                label=f"{codec}, one branch alone, {metric}",
            )
    for metric in ("top1", "top5"):
        axes.axhline(100 * branches["original"][metric], linestyle=":", color="gray")
    views = [
        name for name in branches if name != branches_lib.ORIGINAL and not branches_lib.coded(name)
    ]
    for name, color in zip(sorted(views, key=branches_lib.order), plots.colors()[len(per_codec) :]):
        axes.axhline(
            100 * branches[name]["top1"], linestyle="--", color=color, label=f"{name} alone, top1"
        )
    axes.axhline(100 * evaluation["topology"]["top1"], color="green", label="topology top1")
    axes.set_xlabel("quality of the branch's re-encoding (per codec)")
    axes.set_ylabel("accuracy %")
    axes.set_title("Accuracy per quality and codec (dotted: the original; dashed: the views)")
    axes.legend(fontsize=7)
    return _save(figure, directory, "accuracy_per_quality.png")


def _rate(stage: results_lib.StageResult) -> str:
    """A stage's learning rate, or a solved stage's L2 strength."""
    if stage.solver is not None:
        return f"solved, L2 {stage.solver['l2']:.3g}"
    return f"{stage.learning_rate:g}"


def _ended_by(stage: results_lib.StageResult) -> str:
    if stage.capped:
        return "**epoch cap while still improving: raise --max-epochs-per-stage**"
    return stage.ended_by


def _stages_plot(results: results_lib.Results, directory: str):
    stages = results.stages
    figure, axes = plots.figure(figsize=(7, 4))
    labels = [f"{stage.stage}: {stage.node}" for stage in stages]
    top1 = [100 * stage.best_top1 for stage in stages]
    axes.plot(labels, top1, marker="o", label="topology, best top-1")
    capped = [index for index, stage in enumerate(stages) if stage.capped]
    if capped:  # these stages were still improving: their top-1 is not the stage's best
        axes.scatter(
            [labels[index] for index in capped],
            [top1[index] for index in capped],
            s=120,
            facecolors="none",
            edgecolors="red",
            zorder=3,
            label="hit the epoch cap while improving",
        )
    if results.baseline:
        axes.axhline(
            100 * results.baseline.top1, linestyle="--", color="gray", label="baseline top-1"
        )
    axes.set_ylabel("validation top-1 %")
    axes.set_title("Best top-1 per training stage")
    axes.legend()
    return _save(figure, directory, "best_top1_per_stage.png")


def _nodes_plot(manifest: manifest_lib.Manifest, directory: str):
    nodes = list(manifest.nodes)
    figure, (left, right) = plots.figure(1, 2, figsize=(10, 4))
    left.bar(nodes, [100 * manifest.nodes[node].zero_fraction for node in nodes])
    left.set_ylabel("zeros %")
    left.set_title("Zero fraction per node")
    right.bar(
        nodes, [manifest.nodes[node].bytes_per_image / 1024 for node in nodes], label="stored"
    )
    right.bar(
        nodes,
        [manifest.nodes[node].float32_bytes_per_image / 1024 for node in nodes],
        fill=False,
        label="float32",
    )
    right.set_ylabel("KiB per image")
    right.set_title("Storage per node")
    right.legend()
    for axes in (left, right):
        axes.tick_params(axis="x", rotation=30)
    return _save(figure, directory, "nodes.png")


def _tcm_section(manifest: manifest_lib.Manifest, out_dir: str, numbers: dict) -> list[str]:
    """The tcm view's mask on one image, when the records hold that view and the images are at
    hand."""
    sample = tensorboard_logs.tcm_sample(manifest)
    if sample is None:
        return []
    PIL.Image.fromarray(sample["picture"]).save(os.path.join(out_dir, "tcm_mask.png"))
    numbers["tcm_sample"] = {"path": sample["path"], "high_share": sample["high_share"]}
    spec = manifest.views["spec"]
    return [
        "## The content-adaptive branch (tcm)",
        "",
        f"`{', '.join(spec)}`: on `{sample['path']}`, {100 * sample['high_share']:.1f} % of the "
        "8x8 blocks are kept at the high quality; the blocks compressed at the low quality are "
        "tinted blue.",
        "",
        "![tcm mask](tcm_mask.png)",
        "",
    ]


def _data_directory(manifest: manifest_lib.Manifest, data_dir: str | None):
    return data_dir or manifest.source_root()


def build_report(
    logdir: str,
    evaluation_dir: str | None,
    out_dir: str,
    data_dir: str | None = None,
    bench_files=(),
) -> dict:
    """Writes out_dir/report.md, its PNGs and report.json; returns the numbers."""
    os.makedirs(out_dir, exist_ok=True)
    results = run_directory.read(logdir)
    evaluation = (
        fileio.read_json(os.path.join(evaluation_dir, "evaluation.json"))
        if evaluation_dir
        else None
    )
    manifest = manifest_lib.Manifest.read(results.records)
    timings = fileio.read_json(os.path.join(results.records, "timings.json"))
    numbers = {
        "results": results.to_json(),
        "evaluation": evaluation,
        "nodes": manifest.to_json()["nodes"],
        "timings": timings,
    }
    lines = [
        "# Multi-quality JPEG topology: report",
        "",
        f"Backbone {results.backbone}, branches {', '.join(results.branches)}; records "
        f"`{results.records}`; training run `{logdir}`, trained by the "
        f"**{results.recipe or 'thesis'}** recipe.",
        "",
    ]

    lines += [
        "## Training stages (best validation top-1 per stage)",
        "",
        "| stage | node | thesis block | learning rate or L2 | steps | seconds | best top-1 % | "
        "best top-5 % | ended by |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {stage.stage} | {stage.node} | {stage.thesis_block} | {_rate(stage)} | "
        f"{stage.steps} | {stage.seconds:.0f} | {_percent(stage.best_top1)} | "
        f"{_percent(stage.best_top5)} | {_ended_by(stage)} |"
        for stage in results.stages
    ]
    capped = [stage.node for stage in results.stages if stage.capped]
    if capped:
        lines += [
            "",
            f"**WARNING: {', '.join(capped)} hit the epoch cap while still improving, so its top-1 "
            f"understates what the stage can reach: compare nothing against it.**",
        ]
    if results.baseline:
        lines += [
            "",
            f"Baseline (the stock model on the original images): top-1 "
            f"{_percent(results.baseline.top1)} %, top-5 {_percent(results.baseline.top5)} %.",
        ]
    lines += ["", f"![best top-1 per stage]({_stages_plot(results, out_dir)})", ""]

    if evaluation:
        lines += [
            "## Evaluation",
            "",
            evaluate_render.markdown(evaluation, "Evaluation").split("\n", 2)[2],
        ]
        numbers["accuracy_per_codec"] = accuracy_per_codec(evaluation)
        plot = _accuracy_versus_quality(evaluation, out_dir)
        if plot:
            lines += [f"![accuracy per quality factor]({plot})", ""]

    lines += _tcm_section(manifest, out_dir, numbers)

    lines += [
        "## Nodes: sparsity and storage",
        "",
        "| node | storage | zeros % | KiB per image | float32 KiB per image | ratio | shards | "
        "MiB on disk |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for node, entry in manifest.nodes.items():
        files = [shard.files[node] for split in manifest.splits.values() for shard in split.shards]
        lines.append(
            f"| {node} | {entry.encoding} {entry.dtype} | {_percent(entry.zero_fraction)} | "
            f"{entry.bytes_per_image / 1024:.1f} | {entry.float32_bytes_per_image / 1024:.1f} | "
            f"{entry.bytes_per_image / entry.float32_bytes_per_image:.3f} | {len(files)} | "
            f"{sum(file.num_bytes for file in files) / 2**20:.1f} |"
        )
    lines += ["", f"![nodes]({_nodes_plot(manifest, out_dir)})", ""]

    lines += ["## Timings", ""]
    if timings:
        lines.append(
            f"- offline stage: {timings['images_processed']} images in {timings['seconds']:.1f} s "
            f"({timings['images_per_second']:.2f} images/s while extracting)"
        )
    lines += [
        f"- training stage {stage.stage} ({stage.node}): {stage.seconds:.1f} s"
        for stage in results.stages
    ]
    numbers["benchmarks"] = {}
    for path in bench_files:
        bench = fileio.read_json(path)
        if bench is not None:
            numbers["benchmarks"][os.path.basename(path)] = bench
            lines += [
                "",
                f"Benchmark `{path}`:",
                "",
                "```",
                json.dumps(bench, indent=1)[:3000],
                "```",
            ]
    lines.append("")

    source = _data_directory(manifest, data_dir)
    if source and os.path.isdir(source):
        histogram = jpeg_quality.histogram_of_directory(source)
        jpeg_quality.plot(
            histogram, os.path.join(out_dir, "quality_histogram.png"), os.path.basename(source)
        )
        numbers["quality_histogram"] = histogram.to_json()
        lines += [
            "## JPEG quality of the dataset",
            "",
            "```",
            histogram.text(),
            "```",
            "",
            "![quality-factor histogram](quality_histogram.png)",
            "",
        ]

    fileio.write_text_atomic(os.path.join(out_dir, "report.md"), "\n".join(lines))
    fileio.write_json_atomic(os.path.join(out_dir, "report.json"), numbers)
    return numbers


def run(config: analysis_config.ReportConfig) -> dict:
    """jpeg-ladder-report: the report of a training run (and its evaluation)."""
    numbers = build_report(
        config.logdir, config.evaluation, config.out_dir, config.data_dir, config.bench
    )
    print(f"report: wrote {config.out_dir}/report.md")
    return numbers
