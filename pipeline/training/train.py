"""The block-by-block trainer: one run's stages in turn, one machine or several, resume.

    train_and_evaluate(config)   resolve the schedule (stages; learning rate: "auto" sweeps it) ->
                                 the stock model's baseline -> every stage (solved:
                                 pipeline.training.solved; trained: pipeline.training.stage) -> the
                                 export
What a run chooses by training other runs (seeds, the sweep, folds, the refit) is
pipeline.training.selection's, which comes back here for each of them.

LOGDIR's files are pipeline.training.run_directory's; results.json is
pipeline.training.results.Results. With --strategy multiworker every worker runs all of this; the
chief alone writes LOGDIR (see pipeline.training.distribute), and every worker reads from it where
to resume.
"""

import dataclasses
import functools
import json
import os

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline import interrupt
from pipeline.config import training as training_config
from pipeline.training import distribute
from pipeline.training import export
from pipeline.training import heads
from pipeline.training import input_pipeline
from pipeline.training import metrics
from pipeline.training import prepare as prepare_lib
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import selection
from pipeline.training import solved
from pipeline.training import stage as stage_lib
from pipeline.training import tensorboard_logs
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

NO_CLASSIFIER_NOTE = (
    "no stock-model baseline: the backbone is an image feature vector model without an ImageNet "
    "classifier; train the single-branch baseline with --branches 0"
)
# Under this many validation images every choice moves by more than 0.1 points an image: the run
# suggests --folds.
SMALL_VALIDATION = 1000
# Resuming on other devices or machines, with another input sharding (or without a progress bar) is
# still the same run: these settings are not part of its identity.
NOT_IDENTITY = (
    "progress",
    "export",
    "devices",
    "strategy",
    "collective_timeout",
    "input_sharding",
    "refit",  # a finished run may be refit later
)


def train_and_evaluate(
    config: training_config.TrainConfig,
    stop: interrupt.StopRequests | None = None,
    announce: bool = True,
    features: dict | None = None,
    role: selection.Role | None = None,
    manifest: manifest_lib.Manifest | None = None,
) -> results_lib.Results:
    """Runs (or resumes) every stage and returns the run's results (as written to results.json).

    With `stop` (see pipeline.interrupt), a SIGINT/SIGTERM stops training after the step in
    progress, with the stage's resume point saved, and raises interrupt.Interrupted; the same call
    resumes. `features`: {node: pipeline.training.features.Features} already in memory, read by
    every stage of those nodes instead of the records (compare reads them once for every arm);
    `role`: what the run is to a selection that made it (compare's arms share a sweep by it);
    `manifest`: the records' manifest when the caller has read it (a job reads it once).
    """
    role = role or selection.Role()
    if config.strategy == "multiworker":
        # Before anything else: collective ops can only be set up before TensorFlow has run an op.
        strategy = distribute.make_strategy(
            config.strategy, collective_timeout=config.collective_timeout
        )
    manifest = manifest or manifest_lib.Manifest.read(config.records_dir)
    if config.strategy != "multiworker":
        return _train(config, role, stop, announce, features=features, manifest=manifest)
    try:
        if distribute.num_workers() > 1:
            config = _choose_input_sharding(config, strategy, manifest)
        return _train(config, role, stop, announce, features=features, manifest=manifest)
    except distribute.PEER_ERRORS as error:
        if not distribute.is_peer_failure(error):
            raise
        raise errors.UserError(
            distribute.peer_failure_message(error, config.logdir, config.collective_timeout)
        ) from None
    finally:
        distribute.remove_scratch()


def _choose_input_sharding(
    config: training_config.TrainConfig,
    strategy: tf.distribute.Strategy,
    manifest: manifest_lib.Manifest,
) -> training_config.TrainConfig:
    """The config with its input sharding resolved to data or file for this cluster, said in one
    line."""
    num_shards = manifest.split("train").num_shards
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
    config: training_config.TrainConfig, manifest: manifest_lib.Manifest | None = None
) -> prepare_lib.Setup:
    """What the stages of a run share: the recipe's values and the stages resolved from the
    records, and with --learning-rate auto the rate its finished sweep chose."""
    manifest = manifest or manifest_lib.Manifest.read(config.records_dir)
    config = prepare_lib.resolve_stages(config.resolved(), manifest)
    if isinstance(config.learning_rate, str):
        results = run_directory.RunDirectory(config.logdir).read_results()
        if results is None or results.learning_rate_sweep is None:
            raise errors.UserError(
                f"the run in {config.logdir} has not chosen its learning rate yet: train it first"
            )
        if results.learning_rate_sweep.chosen is not None:  # None: every stage is solved
            config = dataclasses.replace(config, learning_rate=results.learning_rate_sweep.chosen)
    return prepare_lib.prepare(config, manifest)


def _train(
    config: training_config.TrainConfig,
    role: selection.Role,
    stop: interrupt.StopRequests | None,
    announce: bool = True,
    baseline: bool = True,
    identity: dict | None = None,
    sweep: results_lib.Sweep | None = None,
    features: dict | None = None,
    manifest: manifest_lib.Manifest | None = None,
) -> results_lib.Results:
    """One run (or the selection it asks for: seeds, folds). identity: the settings the run's folder
    must match (default: its config's and role's); sweep: a learning rate chosen elsewhere (by
    --folds, a refit); features, manifest: as train_and_evaluate's."""
    train = functools.partial(_train, manifest=manifest)  # how a selection trains its runs
    if config.seeds > 1:
        return selection.seeds(config, role, stop, features, train)
    identity = identity or _settings(config, role)
    run = run_directory.RunDirectory(config.logdir)
    # The recipe's values and the stages, then the learning rate: each resolved once, here. Bad
    # flags fail now, before anything is recorded.
    resolved = prepare_lib.resolve_stages(config.resolved(), manifest)
    solves_first = solves_first_stage(resolved, manifest)
    if resolved.folds > 1 and role.plain:
        return selection.by_folds(
            resolved, identity, manifest, solves_first, stop, announce, features, train
        )
    sweep = sweep or selection.learning_rate_sweep(
        resolved, role, solves_first, stop, features, train
    )
    chosen = resolved.learning_rate if sweep.chosen is None else sweep.chosen
    setup = prepare_lib.prepare(
        dataclasses.replace(resolved, learning_rate=chosen), manifest, features, role
    )
    run.check_settings(identity)
    results = dataclasses.replace(
        run.read_results() or _new_results(setup),
        learning_rate_sweep=sweep,
        selection=_selection(setup, sweep),
    )
    logs = (
        tensorboard_logs.RunLogs(run.writable(config.logdir))
        if role.summaries
        else tensorboard_logs.SILENT
    )
    if baseline and role.plain and results.baseline is None and setup.label_map is not None:
        results = dataclasses.replace(results, baseline=evaluate_baseline(setup))
        run.write_results(results)
    logs.sample_ladder(setup.manifest)
    logs.sample_boxes(setup.manifest)
    logs.sample_tcm(setup.manifest)
    for stage in setup.schedule:
        if results.stage(stage.node) is not None:
            continue
        interrupt.stop_if_requested(stop, f"before {stage.name}, the stages before it saved")
        if stage.solved:
            outcome = solved.solve(
                setup, stage, setup.stage_features(stage.node), logs.stage_writers(stage, setup)
            )
        else:
            outcome = stage_lib.StageRun(setup, stage, logs, stop).run()
        results = results.with_stage(outcome)
        run.write_results(results)
        logs.stage_summary(stage, outcome)
    results = _export(setup, results, run)
    # The refit, or its export when this call exports and the refit was trained without one.
    if (
        resolved.refit
        and role.plain
        and (results.refit is None or (config.export and not results.refit.get("export")))
    ):
        results = selection.refit(setup.config, results, stop, features, train)
        run.write_results(results)
    if announce:
        print(results.summary())
    return results


def _export(setup, results, run) -> results_lib.Results:
    """The raw-image model of the last stage's best checkpoint, unless written already (or unless
    the records hold autoencoder codes, which would need the encoder)."""
    config = setup.config
    if config.export and setup.manifest.codes:
        results = dataclasses.replace(
            results,
            export_skipped=(
                "the records hold autoencoder codes: a raw-image model would need the encoder, so "
                "no export/ is written"
            ),
        )
        run.write_results(results)
    elif config.export and not (results.export and os.path.isdir(results.export["path"])):
        last = setup.schedule[-1]
        exported = export.export_model(
            setup, last, results.stage(last.node).checkpoint, run.writable(run.export_dir)
        )
        results = dataclasses.replace(results, export=exported)
        run.write_results(results)
    return results


def _selection(setup: prepare_lib.Setup, sweep: results_lib.Sweep) -> str:
    """How many images the run's choices (learning rate, stopping points) rest on, in words."""
    role = setup.role
    if role.replay is not None:
        return sweep.chosen_by or "a replayed schedule: nothing chosen on these images"
    images = input_pipeline.num_examples(role, setup.manifest, "validation")
    what = "fold" if role.fold is not None else "validation split"
    text = (
        f"Every choice (stopping points{', learning rate' if sweep.candidates else ''}) rests on "
        f"the {images} images of the {what}: one image is {100 / max(1, images):.2f} points"
    )
    if role.fold is None and images < SMALL_VALIDATION:
        pool = images + setup.manifest.num_records("train")
        text += f"; --folds 5 would rest them on all {pool} labelled images"
    return text


def _settings(config: training_config.TrainConfig, role: selection.Role) -> dict:
    """The run's identity as given (before its stages and learning rate are resolved), and its role:
    config.json."""
    settings = {
        key: value for key, value in dataclasses.asdict(config).items() if key not in NOT_IDENTITY
    }
    settings.update(role.identity())
    return json.loads(json.dumps(settings))  # as config.json holds it: lists, not tuples


def _new_results(setup: prepare_lib.Setup) -> results_lib.Results:
    config = setup.config
    return results_lib.Results(
        records=fileio.abspath(config.records_dir),
        backbone=setup.backbone.name,
        branches=setup.branch_names,
        branch_indices=tuple(setup.branches),
        fusion=config.fusion,
        optimizer=config.optimizer,
        head=heads.description(
            config.head,
            config.hidden_units,
            config.activation,
            config.dropout,
            config.head_nodes or (),
        ),
        seed=config.seed,
        label_space="imagenet" if setup.label_map is not None else "dataset",
        global_batch_size=config.batch_size,
        replicas=setup.strategy.num_replicas_in_sync,
        baseline_note=None if setup.backbone.has_classifier else NO_CLASSIFIER_NOTE,
        workers=distribute.num_workers(),
        input_sharding=config.input_sharding if distribute.num_workers() > 1 else None,
        recipe=config.recipe,
        solver_note=setup.solver_note,
    )


def solves_first_stage(
    config: training_config.TrainConfig, manifest: manifest_lib.Manifest
) -> bool:
    """Whether a resolved run's first stage is solved (pipeline.training.solved), not trained."""
    branches = branches_lib.resolve(config.branches, manifest.branch_names)
    return solved.not_solved_because(config, manifest, config.stages[0], 0, len(branches)) is None


def evaluate_baseline(setup: prepare_lib.Setup) -> results_lib.Baseline:
    """The stock backbone's top-1/top-5 on the original images, from the first stage's records."""
    node = setup.schedule[0].node
    tail = cut.tail(setup.backbone_model, node)
    classifier = cut.classifier_layer(setup.backbone_model)
    totals = np.zeros(3)
    with reader.explained_data_loss(setup.config.records_dir, node, "validation"):
        for bottlenecks, labels in input_pipeline.stage_dataset(
            setup, node, "validation", training=False, branches=(0,), nodes=(node,)
        ):
            probabilities = classifier(tail(bottlenecks[:, 0], training=False))
            totals += [
                float(metrics.correct_in_top_k(probabilities, labels, k)) for k in (1, 5)
            ] + [len(labels)]
    return results_lib.Baseline(node=node, top1=totals[0] / totals[2], top5=totals[1] / totals[2])
