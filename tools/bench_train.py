"""Benchmark of the trainer on real photos and real weights, measured side by side in one run.

    python -m tools.bench_train --out /tmp/bench_train

On ../shared/data/imagenette-mini with the real ImageNet MobileNetV2 weights:
  (a) training steps/s fed from the TFRecords (the trainer's own input pipeline: with its in-memory
      cache of decoded bottlenecks, and decoding every epoch) versus the same stage model fed from
      in-memory tensors, alternating rounds: target >= 0.9 (input is not the bottleneck);
  (b) the default schedule end to end: wall time per stage and best top-1/top-5 of every stage on the
      validation split, next to the stock model's (the baseline) on the same images.
Prints a table and writes bench_train.json into --out.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

import numpy as np
import tensorflow as tf

from pipeline import config as config_lib

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")


def make_records(data_dir: str, weights: str, out_dir: str, nodes) -> str:
    from pipeline.offline import extract

    config = config_lib.ExtractConfig(out_dir=out_dir, data_dir=data_dir, backbone="mobilenet_v2",
                                      weights=weights, nodes=tuple(nodes), num_shards=4, batch_size=8)
    extract.make_tfrecords(config)  # resumes (a no-op) when the records are already there
    return out_dir


def steps_per_second(steps, iterator, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        loss, _ = steps.train(iterator)
    float(loss)  # waits for the last step
    return count / (time.perf_counter() - started)


def measure_input_pipeline(config: config_lib.TrainConfig, stage_index: int, rounds: int, steps_per_round: int):
    """Steps/s of one stage model fed from the records and from tensors already in memory."""
    from pipeline.training import prepare
    from pipeline.training import steps as steps_lib

    setup = prepare.prepare(config)
    stage = setup.stages[stage_index]
    model, optimizer = prepare.stage_model(setup, stage)
    steps = steps_lib.Steps(setup.strategy, model, optimizer, config.batch_size)
    from_records = iter(setup.strategy.experimental_distribute_dataset(
        prepare.stage_dataset(setup, stage.node, "train", training=True, seed=0)))
    # The same batches, decoded once and held in memory, replayed without any parsing.
    cached = list(prepare.stage_dataset(setup, stage.node, "train", training=True, seed=0).take(setup.steps_per_epoch))
    bottlenecks = tf.concat([batch[0] for batch in cached], 0)
    labels = tf.concat([batch[1] for batch in cached], 0)
    in_memory = iter(setup.strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((bottlenecks, labels)).repeat().batch(
            config.batch_size, drop_remainder=True).prefetch(2)))
    steps_per_second(steps, from_records, 3)  # traces the step function and fills the buffers
    steps_per_second(steps, in_memory, 3)
    records_rates, memory_rates = [], []
    for _ in range(rounds):  # alternating, so that a noisy neighbour hits both alike
        records_rates.append(steps_per_second(steps, from_records, steps_per_round))
        memory_rates.append(steps_per_second(steps, in_memory, steps_per_round))
    return {"node": stage.node, "cache_mb": config.cache_mb,
            "records_steps_per_second": float(np.median(records_rates)),
            "memory_steps_per_second": float(np.median(memory_rates)),
            "ratio": float(np.median(records_rates) / np.median(memory_rates)), "target": 0.9}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(SHARED, "data", "imagenette-mini"))
    parser.add_argument("--weights", default=os.path.join(SHARED, "weights",
                                                          "mobilenet_v2_1.0_224_imagenet.weights.h5"))
    parser.add_argument("--out", default="bench_train", help="records, logs and bench_train.json go here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=20)
    parser.add_argument("--max-epochs-per-stage", type=float, default=20.0)
    flags = parser.parse_args(argv)
    for path in (flags.data_dir, flags.weights):
        if not os.path.exists(path):
            print(f"bench_train: error: {path} is missing (pass --data-dir / --weights)", file=sys.stderr)
            return 2
    from pipeline import components
    from pipeline.training import train

    stages = components.get_backbone("mobilenet_v2").default_stages[:2]
    records = make_records(flags.data_dir, flags.weights, os.path.join(flags.out, "records"), stages)
    logdir = os.path.join(flags.out, "run")
    shutil.rmtree(logdir, ignore_errors=True)
    config = config_lib.TrainConfig(records_dir=records, logdir=logdir, stages=stages, batch_size=100,
                                    eval_every_steps=5, max_epochs_per_stage=flags.max_epochs_per_stage,
                                    export=False)
    # With the default in-memory cache of decoded bottlenecks (these splits fit), and decoding the
    # records on every epoch as a dataset too large for memory would.
    pipeline_figures = [measure_input_pipeline(dataclasses.replace(config, logdir=logdir + "-speed",
                                                                   cache_mb=cache_mb),
                                               index, flags.rounds, flags.steps_per_round)
                        for cache_mb in (config.cache_mb, 0.0) for index in range(len(stages))]
    results = train.train_and_evaluate(config)
    figures = {"input_pipeline": pipeline_figures, "stages": results["stages"],
               "baseline": results.get("baseline")}
    print("\n(a) training steps/s, from TFRecords vs in-memory tensors (target ratio >= 0.9)")
    for row in pipeline_figures:
        verdict = "PASS" if row["ratio"] >= row["target"] else "MISS"
        reading = "cached in memory" if row["cache_mb"] else "decoded every epoch"
        print(f"  {row['node']:<22} {reading:<20} records {row['records_steps_per_second']:7.2f}  "
              f"memory {row['memory_steps_per_second']:7.2f}  ratio {row['ratio']:.3f}  {verdict}")
    print("(b) the default schedule on the validation split")
    if figures["baseline"]:
        print(f"  baseline (stock model)  top-1 {100 * figures['baseline']['top1']:.2f} %  "
              f"top-5 {100 * figures['baseline']['top5']:.2f} %")
    for stage in results["stages"]:
        print(f"  stage {stage['stage']} {stage['node']:<20} top-1 {100 * stage['best_top1']:.2f} %  "
              f"top-5 {100 * stage['best_top5']:.2f} %  {stage['steps']} steps  {stage['seconds']:.0f} s")
    with open(os.path.join(flags.out, "bench_train.json"), "w") as file:
        json.dump(figures, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
