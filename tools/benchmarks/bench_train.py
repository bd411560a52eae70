"""Benchmark of the trainer on real photos and real weights, measured side by side in one run.

    python -m tools.benchmarks.bench_train --out /tmp/bench_train
    python -m tools.benchmarks.bench_train --records RECORDS --out /tmp/bench_train --no-schedule
    --cache uncached

On ../shared/data/imagenette-mini with the real ImageNet MobileNetV2 weights (or on --records):
  (a) per stage node, training steps/s fed from the TFRecords by the trainer's own input pipeline
  versus
      the same stage model fed from tensors already in memory, in alternating rounds (the ratio is
      the median of the rounds' ratios, so that a noisy neighbour hits both sides alike): decoding
      every epoch (--cache-mb 0, as at ImageNet size, where no split fits in memory; target >= 0.95)
      and with the default in-memory cache of decoded bottlenecks (these splits fit; target >= 0.9).
      Then where the time goes, each part alone, in milliseconds per batch: the training step on one
      batch already in memory, the uncached input pipeline with no step, and parsing
      (tfrecords.example.parse_batch) of serialized batches already in memory.
      The input alone against the step alone (wall) is its headroom where the step leaves the CPU
      free, as on an accelerator: it keeps up with any step that takes longer than the input's wall
      time per batch;
  (b) the default schedule end to end: wall time per stage and best top-1/top-5 of every stage on
  the
      validation split, next to the stock model's (the baseline) on the same images.
Prints a table and writes bench_train.json into --out. Only the trainer's public functions are used,
so the same script also measures an older checkout: run it with that checkout first on PYTHONPATH.
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import tensorflow as tf

from bottlenecks import registry
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from tfrecords import example
from tfrecords import reader

# tools/benchmarks/<this file> -> the project root
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")
TARGETS = {"uncached": 0.95, "cached": 0.9}


def make_records(data_dir: str, weights: str, out_dir: str, nodes) -> str:

    config = offline_config.ExtractConfig(
        out_dir=out_dir,
        data_dir=data_dir,
        backbone="mobilenet_v2",
        weights=weights,
        nodes=tuple(nodes),
        num_shards=4,
        batch_size=8,
    )
    job.make_tfrecords(config)  # resumes (a no-op) when the records are already there
    return out_dir


def steps_per_second(steps, iterator, count: int) -> float:
    return _timed_steps(steps, iterator, count)[0]


def _timed_steps(steps, iterator, count: int) -> tuple[float, float]:
    """(steps/s, CPU milliseconds of every thread of this process per step) over count steps."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        loss, _ = steps.train(iterator)
    float(loss)  # waits for the last step
    return count / (time.perf_counter() - started), 1000 * (time.process_time() - cpu) / count


def _stage(config: training_config.TrainConfig, node: str):
    """The set-up and distributed steps of a one-stage run reading `node`."""
    from pipeline.training import prepare
    from pipeline.training import steps as steps_lib
    from pipeline.training import train

    setup = train.prepare(dataclasses.replace(config, stages=(node,)))
    model, optimizer = prepare.stage_model(setup, setup.config.schedule[0])
    return setup, steps_lib.Steps(setup.strategy, model, optimizer, config.batch_size)


def measure_input_pipeline(
    config: training_config.TrainConfig, node: str, rounds: int, seconds_per_round: float
) -> dict:
    """Steps/s of one stage model fed from the records and from tensors already in memory, in
    alternating rounds.

    The ratio is the median over rounds of records/memory in adjacent rounds: the two sides of one
    round share the machine's load of the moment, which on a shared machine varies more than either
    side. The CPU ratio (memory's CPU time per step over the records') is the share of the step's
    own work in what a step from the records costs: the steps/s ratio to expect where the step keeps
    every core busy.
    """
    from pipeline.training import input_pipeline

    setup, steps = _stage(config, node)
    from_records = iter(
        setup.strategy.experimental_distribute_dataset(
            input_pipeline.stage_dataset(setup, node, "train", training=True, seed=0)
        )
    )
    # The same batches, decoded once and held in memory, replayed without any parsing.
    cached = list(
        input_pipeline.stage_dataset(setup, node, "train", training=True, seed=0).take(
            setup.steps_per_epoch
        )
    )
    bottlenecks = tf.concat([batch[0] for batch in cached], 0)
    labels = tf.concat([batch[1] for batch in cached], 0)
    in_memory = iter(
        setup.strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((bottlenecks, labels))
            .repeat()
            .batch(config.batch_size, drop_remainder=True)
            .prefetch(2)
        )
    )
    steps_per_second(steps, from_records, 3)  # traces the step function and fills the buffers
    count = max(3, round(seconds_per_round * steps_per_second(steps, in_memory, 3)))
    records_rounds, memory_rounds = [], []
    for _ in range(rounds):
        records_rounds.append(_timed_steps(steps, from_records, count))
        memory_rounds.append(_timed_steps(steps, in_memory, count))
    (records_rates, records_cpu), (memory_rates, memory_cpu) = (
        np.transpose(records_rounds),
        np.transpose(memory_rounds),
    )
    reading = "cached" if config.cache_mb else "uncached"
    return {
        "node": node,
        "reading": reading,
        "cache_mb": config.cache_mb,
        "encoding": setup.manifest.node(node).encoding,
        "dtype": setup.manifest.node(node).dtype,
        "steps_per_round": count,
        "records_rounds": records_rates.tolist(),
        "memory_rounds": memory_rates.tolist(),
        "records_steps_per_second": float(np.median(records_rates)),
        "memory_steps_per_second": float(np.median(memory_rates)),
        "ratio": float(np.median(records_rates / memory_rates)),
        "target": TARGETS[reading],
        "records_cpu_ms_per_step": float(np.median(records_cpu)),
        "memory_cpu_ms_per_step": float(np.median(memory_cpu)),
        "cpu_ratio": float(np.median(memory_cpu / records_cpu)),
    }


def _milliseconds(function, count: int) -> tuple[float, float]:
    """(wall, CPU of every thread of this process) milliseconds per call of function, after one
    warm-up call."""
    function()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        function()
    return 1000 * (time.perf_counter() - wall) / count, 1000 * (time.process_time() - cpu) / count


def where_the_time_goes(config: training_config.TrainConfig, node: str, count: int) -> dict:
    """Wall and CPU milliseconds per batch of each part alone: the step, the uncached input
    pipeline, parsing.

    CPU time counts every core: on a machine whose cores the step already keeps busy, the input
    pipeline's CPU time per batch is what it takes away from the step.
    """
    from pipeline.training import input_pipeline

    setup, steps = _stage(dataclasses.replace(config, cache_mb=0.0), node)
    dataset = input_pipeline.stage_dataset(setup, node, "train", training=True, seed=0)
    batch = next(iter(dataset))
    fixed = iter(
        setup.strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat())
    )
    step_ms, step_cpu_ms = _milliseconds(lambda: float(steps.train(fixed)[0]), count)
    # A fresh stream, timed over many batches: its prefetch buffer, full or not, is then a small
    # part of them.
    batches = iter(dataset)
    input_ms, input_cpu_ms = _milliseconds(lambda: next(batches), 5 * count)
    info = setup.manifest.node(node)
    paths = setup.manifest.shard_paths(node, "train")
    serialized = tf.stack(
        list(
            tf.data.TFRecordDataset(paths, compression_type=setup.manifest.compression).take(
                config.batch_size
            )
        )
    )
    dtype = (
        [] if info.dtype == "float32" else [info.dtype]
    )  # the argument older checkouts do not have
    parse = tf.function(
        lambda records: example.parse_batch(records, info.shape, info.encoding, *dtype)[
            "bottleneck"
        ]
    )
    parse_ms, parse_cpu_ms = _milliseconds(lambda: parse(serialized).numpy(), count)
    return {
        "node": node,
        "encoding": info.encoding,
        "dtype": info.dtype,
        "record_bytes": float(np.mean([len(record) for record in serialized.numpy()])),
        "decoded_bytes": 4 * math.prod(info.shape),
        "step_ms": step_ms,
        "step_cpu_ms": step_cpu_ms,
        "input_ms": input_ms,
        "input_cpu_ms": input_cpu_ms,
        "parse_ms": parse_ms,
        "parse_cpu_ms": parse_cpu_ms,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=os.path.join(SHARED, "data", "imagenette-mini"))
    parser.add_argument(
        "--weights",
        default=os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_imagenet.weights.h5"),
    )
    parser.add_argument(
        "--records", help="existing MobileNetV2 records to read (default: made in OUT/records)"
    )
    parser.add_argument(
        "--nodes", help="stage nodes to measure in (a) (default: the backbone's default stages)"
    )
    parser.add_argument(
        "--out", default="bench_train", help="records, logs and bench_train.json go here"
    )
    parser.add_argument(
        "--cache",
        default="both",
        choices=["both", "uncached", "cached"],
        help="(a) with --cache-mb 0, with the default cache, or both (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="alternating rounds of each side (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds-per-round",
        type=float,
        default=8.0,
        help="steps per round are set to take about this long (default: %(default)s)",
    )
    parser.add_argument(
        "--part-batches", type=int, default=10, help="batches timed for each part alone"
    )
    parser.add_argument(
        "--no-schedule", action="store_true", help="skip (b), the default schedule end to end"
    )
    parser.add_argument("--max-epochs-per-stage", type=float, default=20.0)
    flags = parser.parse_args(argv)
    for path in (flags.data_dir, flags.weights):
        if not flags.records and not os.path.exists(path):
            print(
                f"bench_train: error: {path} is missing (pass --data-dir / --weights)",
                file=sys.stderr,
            )
            return 2
    from pipeline.training import train

    default_stages = registry.get_backbone("mobilenet_v2").default_stages
    nodes = tuple(flags.nodes.split(",")) if flags.nodes else default_stages
    stages = default_stages[:2]
    records = flags.records or make_records(
        flags.data_dir, flags.weights, os.path.join(flags.out, "records"), default_stages
    )
    os.makedirs(flags.out, exist_ok=True)
    logdir = os.path.join(flags.out, "run")
    shutil.rmtree(logdir, ignore_errors=True)
    config = training_config.TrainConfig(
        records_dir=records,
        logdir=logdir,
        stages=stages,
        batch_size=100,
        eval_every_steps=5,
        max_epochs_per_stage=flags.max_epochs_per_stage,
        export=False,
    )
    cache_sizes = {
        "both": (0.0, config.cache_mb),
        "uncached": (0.0,),
        "cached": (config.cache_mb,),
    }[flags.cache]
    speed_config = dataclasses.replace(config, logdir=logdir + "-speed")
    pipeline_figures = [
        measure_input_pipeline(
            dataclasses.replace(speed_config, cache_mb=cache_mb),
            node,
            flags.rounds,
            flags.seconds_per_round,
        )
        for node in nodes
        for cache_mb in cache_sizes
    ]
    parts = [where_the_time_goes(speed_config, node, flags.part_batches) for node in nodes]
    allocator = reader.loaded_allocator() or "unknown"  # older checkouts lack it
    figures = {
        "records": records,
        "allocator": allocator,
        "input_pipeline": pipeline_figures,
        "parts": parts,
    }
    if not flags.no_schedule:
        results = train.train_and_evaluate(config)
        figures.update(
            stages=results.to_json()["stages"], baseline=results.to_json().get("baseline")
        )
    print(
        "\n(a) training steps/s, from TFRecords vs in-memory tensors (memory allocator: "
        f"{allocator})"
    )
    for row in pipeline_figures:
        verdict = "PASS" if row["ratio"] >= row["target"] else "MISS"
        reading = "cached in memory" if row["reading"] == "cached" else "decoded every epoch"
        print(
            f"  {row['node']:<22} {row['encoding']:<6} {row['dtype']:<8} {reading:<20} "
            f"records {row['records_steps_per_second']:7.2f}  memory "
            f"{row['memory_steps_per_second']:7.2f}  "
            f"ratio {row['ratio']:.3f} (target {row['target']})  {verdict}  "
            f"CPU per step {row['records_cpu_ms_per_step']:.0f} / "
            f"{row['memory_cpu_ms_per_step']:.0f} ms, "
            f"CPU ratio {row['cpu_ratio']:.3f}"
        )
    print("    where the time goes, each part alone: wall / CPU (all cores) ms per batch")
    for row in parts:
        print(
            f"  {row['node']:<22} {row['encoding']:<6} {row['dtype']:<8} "
            f"step {row['step_ms']:7.1f} / {row['step_cpu_ms']:7.1f}  "
            f"input pipeline {row['input_ms']:6.1f} / {row['input_cpu_ms']:6.1f}  "
            f"parse {row['parse_ms']:6.1f} / {row['parse_cpu_ms']:6.1f}  "
            f"({row['record_bytes'] / 1024:.1f} KiB/record, {row['decoded_bytes'] / 1024:.1f} KiB "
            f"decoded)  input alone {row['step_ms'] / row['input_ms']:.1f}x the step's rate"
        )
    if not flags.no_schedule:
        print("(b) the default schedule on the validation split")
        if figures["baseline"]:
            print(
                f"  baseline (stock model)  top-1 {100 * figures['baseline']['top1']:.2f} %  "
                f"top-5 {100 * figures['baseline']['top5']:.2f} %"
            )
        for stage in figures["stages"]:
            print(
                f"  stage {stage['stage']} {stage['node']:<20} top-1 "
                f"{100 * stage['best_top1']:.2f} %  "
                f"top-5 {100 * stage['best_top5']:.2f} %  {stage['steps']} steps  "
                f"{stage['seconds']:.0f} s"
            )
    with open(os.path.join(flags.out, "bench_train.json"), "w") as file:
        json.dump(figures, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
