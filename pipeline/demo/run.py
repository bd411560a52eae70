"""The demo: the whole method end to end on a small dataset, as one story. Records, then the
comparison (the baseline and each fusion, every arm trained by one rule, scored on the test split),
then the evaluation and the report of the thesis's topology, built from the comparison's own concat
run against its own baseline run: the report's figures and the comparison's are the same models'."""

import dataclasses
import os
import time

from bottlenecks import registry
from pipeline.analysis import compare
from pipeline.analysis import comparison_render
from pipeline.analysis import evaluate
from pipeline.analysis import evaluate_render
from pipeline.analysis import predictions as predictions_lib
from pipeline.analysis import report
from pipeline.config import analysis as analysis_config
from pipeline.config import demo as demo_config
from pipeline.demo import synthetic as demo_data
from pipeline.offline import job
from pipeline.training import run_directory


def run_demo(config: demo_config.DemoConfig) -> dict:
    started = time.perf_counter()
    data_dir = config.data_dir
    if data_dir is None:
        data_dir = os.path.join(config.out_dir, "synthetic")
        print(
            "demo: writing a SYNTHETIC dataset (textured coloured shapes, not real photos) to "
            f"{data_dir}"
        )
        demo_data.write_shapes_dataset(data_dir, per_class=config.images_per_class)
    backbone = registry.get_backbone(config.extract.backbone)
    stages = backbone.default_stages[: config.num_stages]
    records = os.path.join(config.out_dir, "records")
    progress = config.training.progress
    manifest = job.make_tfrecords(
        dataclasses.replace(
            config.extract, out_dir=records, data_dir=data_dir, nodes=stages, progress=progress
        )
    ).manifest
    # Does the ladder help? Every arm trained block by block by one rule, scored on the test split.
    comparison_config = analysis_config.CompareConfig(
        records_dir=records,
        out_dir=os.path.join(config.out_dir, "compare"),
        fusions=config.fusions,
        training=dataclasses.replace(config.training, stages=stages),
    )
    comparison = compare.compare(comparison_config, manifest=manifest)
    # The report: the topology run the comparison trained (concat, the thesis's, when compared; its
    # first seed) against the comparison's own baseline run, on the same test images.
    topology = "concat" if "concat" in config.fusions else config.fusions[0]
    topology_logdir = compare.arm_training(comparison_config, topology, 0).logdir
    baseline_logdir = compare.arm_training(comparison_config, compare.BASELINE, 0).logdir
    evaluation_dir = os.path.join(config.out_dir, "evaluation")
    split = evaluate.records_split(manifest, "test")
    export_dir = run_directory.RunDirectory(topology_logdir).export_dir
    predictions = predictions_lib.from_records(export_dir, manifest, baseline_logdir, split)
    evaluate_render.write(
        evaluate.evaluate(predictions, predictions.image_ids[:1], split), evaluation_dir
    )
    report_dir = os.path.join(config.out_dir, "report")
    report.build_report(topology_logdir, evaluation_dir, report_dir)
    seconds = time.perf_counter() - started
    print(
        f"\ndemo: done in {seconds:.0f} s.\n"
        f"  comparison:  {os.path.join(comparison_config.out_dir, 'comparison.md')}\n"
        f"  report:      {os.path.join(report_dir, 'report.md')} (the {topology} run of the "
        "comparison, with its PNG plots)\n"
        f"  evaluation:  {os.path.join(evaluation_dir, 'evaluation.md')}\n"
        f"  TensorBoard: tensorboard --logdir {os.path.join(comparison_config.out_dir, 'runs')}  "
        f"(then open http://localhost:6006)\n"
        f"  model:       jpeg-ladder-predict --model {export_dir} IMAGE...\n"
        + (
            "\nOn SYNTHETIC images, which say nothing about real photos: "
            if config.data_dir is None
            else "\n"
        )
        + comparison_render.verdict(comparison).removeprefix("compare: ")
    )
    return {
        "seconds": seconds,
        "report": report_dir,
        "logdir": topology_logdir,
        "baseline_logdir": baseline_logdir,
        "comparison": comparison,
    }
