"""The demo: the whole method end to end on a small dataset — records, two stages, evaluation,
report — and the comparison that answers whether the ladder helps, in one sentence."""

import dataclasses
import os
import time

from bottlenecks import registry
from pipeline import config as config_lib
from pipeline.analysis import compare
from pipeline.analysis import evaluate
from pipeline.analysis import report
from pipeline.demo import synthetic as demo_data
from pipeline.offline import job
from pipeline.training import run_directory
from pipeline.training import train
from tfrecords import manifest as manifest_lib


def run_demo(config: config_lib.DemoConfig) -> dict:
    started = time.perf_counter()
    data_dir = config.data_dir
    if data_dir is None:
        data_dir = os.path.join(config.out_dir, "synthetic")
        print(
            "demo: writing a SYNTHETIC dataset (textured coloured shapes, not real photos) to "
            f"{data_dir}"
        )
        demo_data.write_shapes_dataset(data_dir, per_class=config.images_per_class)
    backbone = registry.get_backbone(config.backbone)
    stages = backbone.default_stages[: config.num_stages]
    records = os.path.join(config.out_dir, "records")
    progress = config.training.progress
    job.make_tfrecords(
        config_lib.ExtractConfig(
            out_dir=records,
            data_dir=data_dir,
            backbone=config.backbone,
            weights=None
            if config.backbone.startswith(registry.FEATURE_VECTOR_PREFIXES)
            else config.weights,
            nodes=stages,
            input_size=config.input_size,
            num_shards=2,
            validation_percent=config.validation_percent,
            test_percent=config.test_percent,
            progress=progress,
        )
    )
    # The thesis's method: every branch through the shared tail, block by block.
    training = dataclasses.replace(
        config.training,
        records_dir=records,
        logdir=os.path.join(config.out_dir, "runs", "topology"),
        stages=stages,
    )
    results = train.train_and_evaluate(training)
    baseline_logdir = None
    if results.label_space != "imagenet":  # no stock classifier: train the single-branch baseline
        baseline = dataclasses.replace(
            training, logdir=os.path.join(config.out_dir, "runs", "baseline"), branches=(0,)
        )
        train.train_and_evaluate(baseline)
        baseline_logdir = baseline.logdir
    evaluation_dir = os.path.join(config.out_dir, "evaluation")
    manifest = manifest_lib.Manifest.read(records)
    split = evaluate.records_split(manifest, "test")
    export_dir = run_directory.RunDirectory(training.logdir).export_dir
    predictions = evaluate.predictions_from_records(export_dir, manifest, baseline_logdir, split)
    evaluate.write(evaluate.evaluate(predictions, predictions.image_ids[:1], split), evaluation_dir)
    report_dir = os.path.join(config.out_dir, "report")
    report.build_report(training.logdir, evaluation_dir, report_dir)
    # The honest answer: every arm trained to its own best by one rule, scored on the test split.
    comparison_dir = os.path.join(config.out_dir, "compare")
    rule = dataclasses.replace(
        config_lib.compare_training(),
        seeds=config.seeds,
        sweep_learning_rates=config.sweep_learning_rates,
        sweep_epochs=config.sweep_epochs,
        plateau_epochs=config.plateau_epochs,
        max_epochs_per_stage=config.compare_max_epochs,
        batch_size=config.training.batch_size,
        eval_every_steps=config.training.eval_every_steps,
        progress=progress,
    )
    comparison = compare.compare(
        config_lib.CompareConfig(
            records_dir=records, out_dir=comparison_dir, fusions=config.fusions, training=rule
        )
    )
    seconds = time.perf_counter() - started
    print(
        f"\ndemo: done in {seconds:.0f} s.\n"
        f"  report:      {os.path.join(report_dir, 'report.md')} (with its PNG plots)\n"
        f"  evaluation:  {os.path.join(evaluation_dir, 'evaluation.md')}\n"
        f"  comparison:  {os.path.join(comparison_dir, 'comparison.md')}\n"
        f"  TensorBoard: tensorboard --logdir {os.path.join(config.out_dir, 'runs')}  "
        f"(then open http://localhost:6006)\n"
        f"  model:       jpeg-ladder-predict --model {export_dir} IMAGE...\n"
        + (
            "\nOn SYNTHETIC images, which say nothing about real photos: "
            if config.data_dir is None
            else "\n"
        )
        + compare.verdict(comparison).removeprefix("compare: ")
    )
    return {
        "seconds": seconds,
        "report": report_dir,
        "results": results,
        "logdir": training.logdir,
        "comparison": comparison,
    }
