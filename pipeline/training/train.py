"""The block-by-block trainer: the stages of the schedule in turn, one machine or several, resume.

    train_and_evaluate(config)   resolve the schedule (stages, learning rate: "auto" sweeps it) ->
                                 the stock
                                 model's baseline -> every stage (pipeline.training.stage) -> the
                                 export

LOGDIR's files are pipeline.training.run_directory's; results.json is
pipeline.training.results.Results. With --strategy multiworker every worker runs all of this; the
chief alone writes LOGDIR (see pipeline.training.distribute), and every worker reads from it where
to resume.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from pipeline import config as config_lib
from pipeline import errors
from pipeline import interrupt
from pipeline.training import distribute
from pipeline.training import export
from pipeline.training import heads
from pipeline.training import metrics
from pipeline.training import prepare as prepare_lib
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import stage as stage_lib
from pipeline.training import tensorboard_logs
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

NO_CLASSIFIER_NOTE = (
    "no stock-model baseline: the backbone is an image feature vector model without an ImageNet "
    "classifier; train the single-branch baseline with --branches 0"
)
# Resuming on other devices or machines, with another input sharding (or without a progress bar) is
# still the same run: these settings are not part of its identity.
NOT_IDENTITY = ("progress", "export", "devices", "strategy", "collective_timeout", "input_sharding")


def train_and_evaluate(
    config: config_lib.TrainConfig,
    stop: interrupt.StopRequests | None = None,
    announce: bool = True,
) -> results_lib.Results:
    """Runs (or resumes) every stage and returns the run's results (as written to results.json).

    With `stop` (see pipeline.interrupt), a SIGINT/SIGTERM stops training after the step in
    progress, with the stage's resume point saved, and raises interrupt.Interrupted; the same call
    resumes.
    """
    if config.strategy != "multiworker":
        return _train(config, stop, announce)
    # Before anything else: collective ops can only be set up before TensorFlow has run an op.
    strategy = distribute.make_strategy(
        config.strategy, collective_timeout=config.collective_timeout
    )
    try:
        if distribute.num_workers() > 1:
            config = _choose_input_sharding(config, strategy)
        return _train(config, stop, announce)
    except distribute.PEER_ERRORS as error:
        if not distribute.is_peer_failure(error):
            raise
        raise errors.UserError(
            distribute.peer_failure_message(error, config.logdir, config.collective_timeout)
        ) from None
    finally:
        distribute.remove_scratch()


def _choose_input_sharding(
    config: config_lib.TrainConfig, strategy: tf.distribute.Strategy
) -> config_lib.TrainConfig:
    """The config with its input sharding resolved to data or file for this cluster, said in one
    line."""
    num_shards = manifest_lib.Manifest.read(config.records_dir).split("train").num_shards
    sharding, reason = distribute.choose_input_sharding(
        config.input_sharding,
        num_shards,
        distribute.num_workers(),
        config.batch_size,
        strategy.num_replicas_in_sync,
    )
    print(reason)
    return dataclasses.replace(config, input_sharding=sharding)


def prepare(
    config: config_lib.TrainConfig, manifest: manifest_lib.Manifest | None = None
) -> prepare_lib.Setup:
    """What the stages of a run with a numeric learning rate share (the stages resolved from the
    records)."""
    manifest = manifest or manifest_lib.Manifest.read(config.records_dir)
    return prepare_lib.prepare(prepare_lib.resolve_stages(config, manifest), manifest)


def _train(
    config: config_lib.TrainConfig,
    stop: interrupt.StopRequests | None,
    announce: bool = True,
    baseline: bool = True,
) -> results_lib.Results:
    if config.seeds > 1:
        return _train_seeds(config, stop)
    manifest = manifest_lib.Manifest.read(config.records_dir)
    run = run_directory.RunDirectory(config.logdir)
    resolved = prepare_lib.resolve_stages(
        config, manifest
    )  # bad flags fail here, before anything is recorded
    sweep = learning_rate_sweep(resolved, stop)
    setup = prepare_lib.prepare(dataclasses.replace(resolved, learning_rate=sweep.chosen), manifest)
    run.check_settings(_settings(config))
    results = dataclasses.replace(
        run.read_results() or _new_results(setup), learning_rate_sweep=sweep
    )
    logs = tensorboard_logs.RunLogs(run.writable(config.logdir))
    if baseline and results.baseline is None and setup.label_map is not None:
        results = dataclasses.replace(results, baseline=evaluate_baseline(setup))
        run.write_results(results)
    logs.sample_ladder(setup.manifest)
    for stage in setup.config.schedule:
        if results.stage(stage.node) is not None:
            continue
        outcome = stage_lib.StageRun(setup, stage, logs, stop).run()
        results = results.with_stage(outcome)
        run.write_results(results)
        logs.stage_summary(stage, outcome)
    if config.export and setup.manifest.codes:
        results = dataclasses.replace(
            results,
            export_skipped=(
                "the records hold autoencoder codes: a raw-image model would need the encoder, so "
                "no export/ is "
                "written"
            ),
        )
        run.write_results(results)
    elif config.export and not (results.export and os.path.isdir(results.export["path"])):
        last = setup.config.schedule[-1]
        exported = export.export_model(
            setup, last, results.stage(last.node).checkpoint, run.writable(run.export_dir)
        )
        results = dataclasses.replace(results, export=exported)
        run.write_results(results)
    if announce:
        print(results.summary())
    return results


def _settings(config: config_lib.TrainConfig) -> dict:
    """The run's identity as given (before its stages and learning rate are resolved):
    config.json."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
        if key not in NOT_IDENTITY
    }


def _new_results(setup: prepare_lib.Setup) -> results_lib.Results:
    config = setup.config
    return results_lib.Results(
        records=fileio.abspath(config.records_dir),
        backbone=setup.backbone.name,
        branches=tuple(setup.manifest.branches[branch] for branch in setup.branches),
        branch_indices=tuple(setup.branches),
        fusion=config.fusion,
        optimizer=config.optimizer,
        head=heads.description(config.head, config.hidden_units, config.activation, config.dropout),
        seed=config.seed,
        label_space="imagenet" if setup.label_map is not None else "dataset",
        global_batch_size=config.batch_size,
        replicas=setup.strategy.num_replicas_in_sync,
        baseline_note=None if setup.backbone.has_classifier else NO_CLASSIFIER_NOTE,
        workers=distribute.num_workers(),
        input_sharding=config.input_sharding if distribute.num_workers() > 1 else None,
    )


def learning_rate_sweep(
    config: config_lib.TrainConfig, stop: interrupt.StopRequests | None = None
) -> results_lib.Sweep:
    """The first stage's learning rate: the given one, or with "auto" the best on validation of a
    sweep.

    Each candidate trains the first stage from the same start for sweep_epochs under the same
    plateau rule; the highest validation top-1 wins, ties going to the lower validation loss.
    Finished candidates are kept, so a rerun resumes the sweep.
    """
    if not isinstance(config.learning_rate, str):
        return results_lib.Sweep(chosen=float(config.learning_rate))
    first_node = config.stages[0]
    directory = config.sweep_dir or run_directory.RunDirectory(config.logdir).sweep_dir
    seed = config.seed if config.sweep_seed is None else config.sweep_seed
    candidates = []
    for rate in config.sweep_rates:
        trial = dataclasses.replace(
            config,
            logdir=os.path.join(directory, f"lr{rate:g}"),
            stages=(first_node,),
            learning_rate=rate,
            max_epochs_per_stage=config.sweep_epochs,
            seed=seed,
            sweep_dir=None,
            sweep_seed=None,
            export=False,
        )
        # A candidate is judged by its own validation top-1: the stock model's, the same for every
        # candidate, is left to the run itself.
        stage = _train(trial, stop, announce=False, baseline=False).stages[0]
        candidates.append(
            results_lib.SweepCandidate(rate, stage.best_top1, stage.best_loss, stage.ended_by)
        )
    best = max(candidates, key=lambda row: (row.validation_top1, -row.validation_loss))
    tried = ", ".join(
        f"{row.learning_rate:g} ({100 * row.validation_top1:.2f} %, loss {row.validation_loss:.4f})"
        for row in candidates
    )
    print(
        f"learning-rate sweep ({config.sweep_epochs:g} epochs each at {first_node}; validation "
        "top-1, loss): "
        f"{tried}; chose {best.learning_rate:g}"
    )
    sweep = results_lib.Sweep(
        chosen=best.learning_rate,
        candidates=tuple(candidates),
        node=first_node,
        epochs=config.sweep_epochs,
        directory=directory,
    )
    os.makedirs(distribute.writable(directory), exist_ok=True)
    fileio.write_json_atomic(
        distribute.writable(os.path.join(directory, "sweep.json")), sweep.to_json()
    )
    return sweep


def _train_seeds(
    config: config_lib.TrainConfig, stop: interrupt.StopRequests | None
) -> results_lib.Results:
    """N independent runs (seeded initialisation and shuffling) sharing one sweep; results as mean ±
    sd."""
    run = run_directory.RunDirectory(config.logdir)
    runs = []
    for index in range(config.seeds):
        seeded = dataclasses.replace(
            config,
            logdir=run.seed_logdir(index),
            seeds=1,
            seed=config.seed + index,
            sweep_dir=config.sweep_dir or run.sweep_dir,
            sweep_seed=config.seed if config.sweep_seed is None else config.sweep_seed,
        )
        runs.append(_train(seeded, stop))
    stages = tuple(
        results_lib.StageResult.over_seeds([seeded.stages[position] for seeded in runs])
        for position in range(len(runs[0].stages))
    )
    results = dataclasses.replace(
        runs[0],
        stages=stages,
        export=None,
        seed=None,
        seeds=tuple(seeded.seed for seeded in runs),
        seed_logdirs=tuple(run.seed_logdir(index) for index in range(config.seeds)),
    )
    run.write_results(results)
    print(results.summary())
    return results


def evaluate_baseline(setup: prepare_lib.Setup) -> results_lib.Baseline:
    """The stock backbone's top-1/top-5 on the original images, from the first stage's records."""
    node = setup.config.schedule[0].node
    tail = cut.tail(setup.backbone_model, node)
    classifier = cut.classifier_layer(setup.backbone_model)
    totals = np.zeros(3)
    with reader.explained_data_loss(setup.config.records_dir, node, "validation"):
        for bottlenecks, labels in prepare_lib.stage_dataset(
            setup, node, "validation", training=False, branches=(0,)
        ):
            probabilities = classifier(tail(bottlenecks[:, 0], training=False))
            totals += [
                float(metrics.correct_in_top_k(probabilities, labels, k)) for k in (1, 5)
            ] + [len(labels)]
    return results_lib.Baseline(node=node, top1=totals[0] / totals[2], top5=totals[1] / totals[2])
