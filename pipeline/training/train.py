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
# Resuming on other devices or machines, with another input sharding (or without a progress bar) is
# still the same run: these settings are not part of its identity.
REFIT_NAME = "refit"
# Under this many validation images every choice moves by more than 0.1 points an image: the run
# suggests --folds.
SMALL_VALIDATION = 1000
NOT_IDENTITY = (
    "progress",
    "export",
    "devices",
    "strategy",
    "collective_timeout",
    "input_sharding",
    "refit",  # a finished run may be refit later
    "summaries",
)


def train_and_evaluate(
    config: training_config.TrainConfig,
    stop: interrupt.StopRequests | None = None,
    announce: bool = True,
    features: dict | None = None,
) -> results_lib.Results:
    """Runs (or resumes) every stage and returns the run's results (as written to results.json).

    With `stop` (see pipeline.interrupt), a SIGINT/SIGTERM stops training after the step in
    progress, with the stage's resume point saved, and raises interrupt.Interrupted; the same call
    resumes. `features`: {node: pipeline.training.features.Features} already in memory, read by
    every stage of those nodes instead of the records (compare reads them once for every arm).
    """
    if config.strategy != "multiworker":
        return _train(config, stop, announce, features=features)
    # Before anything else: collective ops can only be set up before TensorFlow has run an op.
    strategy = distribute.make_strategy(
        config.strategy, collective_timeout=config.collective_timeout
    )
    try:
        if distribute.num_workers() > 1:
            config = _choose_input_sharding(config, strategy)
        return _train(config, stop, announce, features=features)
    except distribute.PEER_ERRORS as error:
        if not distribute.is_peer_failure(error):
            raise
        raise errors.UserError(
            distribute.peer_failure_message(error, config.logdir, config.collective_timeout)
        ) from None
    finally:
        distribute.remove_scratch()


def _choose_input_sharding(
    config: training_config.TrainConfig, strategy: tf.distribute.Strategy
) -> training_config.TrainConfig:
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
    stop: interrupt.StopRequests | None,
    announce: bool = True,
    baseline: bool = True,
    identity: dict | None = None,
    sweep: results_lib.Sweep | None = None,
    features: dict | None = None,
) -> results_lib.Results:
    """One run (or, with --seeds, one per seed). identity: the settings the run's folder must
    match (default: the config's own); sweep: a learning rate chosen elsewhere (by --folds);
    features: as train_and_evaluate's."""
    if config.seeds > 1:
        return _train_seeds(config, stop, features)
    identity = identity or _settings(config)
    manifest = manifest_lib.Manifest.read(config.records_dir)
    run = run_directory.RunDirectory(config.logdir)
    # The recipe's values and the stages, then the learning rate: each resolved once, here. Bad
    # flags fail now, before anything is recorded.
    resolved = prepare_lib.resolve_stages(config.resolved(), manifest)
    if resolved.folds > 1 and resolved.fold is None and resolved.replay is None:
        return _train_by_folds(resolved, identity, manifest, stop, announce, features)
    sweep = sweep or learning_rate_sweep(resolved, stop, features)
    chosen = resolved.learning_rate if sweep.chosen is None else sweep.chosen
    setup = prepare_lib.prepare(
        dataclasses.replace(resolved, learning_rate=chosen), manifest, features
    )
    run.check_settings(identity)
    results = dataclasses.replace(
        run.read_results() or _new_results(setup),
        learning_rate_sweep=sweep,
        selection=_selection(setup, sweep),
    )
    logs = (
        tensorboard_logs.RunLogs(run.writable(config.logdir))
        if config.summaries
        else tensorboard_logs.SILENT
    )
    plain = resolved.fold is None and resolved.replay is None
    if baseline and plain and results.baseline is None and setup.label_map is not None:
        results = dataclasses.replace(results, baseline=evaluate_baseline(setup))
        run.write_results(results)
    logs.sample_ladder(setup.manifest)
    logs.sample_boxes(setup.manifest)
    logs.sample_tcm(setup.manifest)
    for stage in setup.schedule:
        if results.stage(stage.node) is not None:
            continue
        if stage.solved:
            outcome = solved.solve(
                setup, stage, setup.stage_features(stage.node), logs.stage_writers(stage, setup)
            )
        else:
            outcome = stage_lib.StageRun(setup, stage, logs, stop).run()
        results = results.with_stage(outcome)
        run.write_results(results)
        logs.stage_summary(stage, outcome)
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
    # The refit, or its export when this call exports and the refit was trained without one.
    if (
        resolved.refit
        and plain
        and (results.refit is None or (config.export and not results.refit.get("export")))
    ):
        results = _refit(setup.config, results, stop, features)
        run.write_results(results)
    if announce:
        print(results.summary())
    return results


def _selection(setup: prepare_lib.Setup, sweep: results_lib.Sweep) -> str:
    """How many images the run's choices (learning rate, stopping points) rest on, in words."""
    config = setup.config
    if config.replay is not None:
        return sweep.chosen_by or "a replayed schedule: nothing chosen on these images"
    images = input_pipeline.num_examples(config, setup.manifest, "validation")
    what = "fold" if config.fold is not None else "validation split"
    text = (
        f"Every choice (stopping points{', learning rate' if sweep.candidates else ''}) rests on "
        f"the {images} images of the {what}: one image is {100 / max(1, images):.2f} points"
    )
    if config.fold is None and images < SMALL_VALIDATION:
        pool = images + setup.manifest.num_records("train")
        text += f"; --folds 5 would rest them on all {pool} labelled images"
    return text


def _refit(
    config: training_config.TrainConfig, selected: results_lib.Results, stop, features=None
) -> results_lib.Results:
    """--refit: the selected schedule (each stage's phases) trained again on train + validation, in
    LOGDIR/refit with its own export; returns the selected run's results naming it."""
    run = run_directory.RunDirectory(config.logdir)
    refit = dataclasses.replace(
        config,
        logdir=run.path(REFIT_NAME),
        replay=tuple(stage.phases for stage in selected.stages),
        combiner_source=config.logdir,
        refit=False,
        seeds=1,
        sweep_dir=None,
        sweep_seed=None,
    )
    refitted = _train(
        refit,
        stop,
        announce=False,
        baseline=False,
        features=features,
        sweep=results_lib.Sweep(
            chosen=config.learning_rate,
            chosen_by="the selected run's schedule (its phases at each rate), trained again on "
            "train + validation",
        ),
    )
    return dataclasses.replace(
        selected,
        refit={"logdir": refit.logdir, "export": refitted.export and refitted.export["path"]},
    )


def _train_by_folds(
    config: training_config.TrainConfig,
    identity: dict,
    manifest: manifest_lib.Manifest,
    stop,
    announce: bool,
    features: dict | None = None,
) -> results_lib.Results:
    """--folds K: the learning rate and each stage's phases (a solved stage's L2 strength) chosen by
    K-fold cross-validation over the train and validation images together, then trained on all of
    them (a replay) in LOGDIR.

    Every candidate rate trains K fold runs (LOGDIR/folds/lr<rate>/fold<i>; LOGDIR/folds/solved/
    when every stage is solved); the rate with the best mean validation metric (the recipe's: loss,
    or top-1) wins, each phase of its schedule lasts the median of its folds' epochs, and a solved
    stage is solved at the median of its folds' strengths (on a log scale).
    """
    run = run_directory.RunDirectory(config.logdir)
    count = config.folds
    first = 1 if solves_first_stage(config, manifest) else 0
    if first == len(config.stages):
        rates = (None,)
    else:
        rates = (
            config.sweep_rates if isinstance(config.learning_rate, str) else (config.learning_rate,)
        )
    candidates, fold_runs = [], {}
    for rate in rates:
        runs = [
            _train(
                dataclasses.replace(
                    config,
                    logdir=run.path("folds", _rate_folder(rate), f"fold{index}"),
                    fold=(count, index),
                    learning_rate=config.learning_rate if rate is None else rate,
                    folds=1,
                    refit=False,
                    export=False,
                    sweep_dir=None,
                    sweep_seed=None,
                    summaries=False,
                ),
                stop,
                announce=False,
                baseline=False,
                features=features,
            )
            for index in range(count)
        ]
        fold_runs[rate] = runs
        candidates.append(
            _candidate(rate, [fold.stages[min(first, len(fold.stages) - 1)] for fold in runs])
        )
    best = _best_candidate(config, candidates)
    chosen = fold_runs[best.learning_rate]
    replay = tuple(
        tuple(
            _median_phase(phases)
            for phases in zip(*(fold.stages[position].phases for fold in chosen))
        )
        for position in range(len(chosen[0].stages))
    )
    images = sum(manifest.num_records(split) for split in ("train", "validation"))
    sweep = results_lib.Sweep(
        chosen=best.learning_rate,
        candidates=tuple(candidates) if best.learning_rate is not None else (),
        node=config.stages[first] if best.learning_rate is not None else None,
        directory=run.path("folds"),
        chosen_by=f"{count}-fold cross-validation over the {images} train and validation images "
        f"(each choice rests on all of them; one image of a fold is "
        f"{100 * count / images:.2f} points)",
    )
    rate_text = "" if best.learning_rate is None else f"learning rate {best.learning_rate:g}; "
    print(f"{sweep.chosen_by}: {rate_text}schedule {replay}")
    final = dataclasses.replace(
        config,
        learning_rate=config.learning_rate if best.learning_rate is None else best.learning_rate,
        replay=replay,
        combiner_source=run.path("folds", _rate_folder(best.learning_rate), "fold0"),
    )
    return _train(
        final,
        stop,
        announce=announce,
        baseline=False,
        identity=identity,
        sweep=sweep,
        features=features,
    )


def _rate_folder(rate: float | None) -> str:
    return "solved" if rate is None else f"lr{rate:g}"


def _median_phase(phases) -> training_config.Phase:
    """One phase of a replay from the folds' phases: the median of their epochs, or of a solved
    stage's L2 strengths on a log scale."""
    if phases[0].l2 is not None:
        return training_config.Phase(
            0.0, 0.0, l2=float(np.exp(np.median(np.log([p.l2 for p in phases]))))
        )
    return training_config.Phase(
        phases[0].learning_rate, float(np.median([phase.epochs for phase in phases]))
    )


def _candidate(rate: float, stages: list[results_lib.StageResult]) -> results_lib.SweepCandidate:
    """A candidate rate's figures: the mean over its runs (seeds or folds) of their first stage."""
    return results_lib.SweepCandidate(
        rate,
        float(np.mean([stage.best_top1 for stage in stages])),
        float(np.mean([stage.best_loss for stage in stages])),
        results_lib.MAX_EPOCHS if any(stage.capped for stage in stages) else results_lib.PLATEAU,
        tuple(stage.best_loss for stage in stages) if len(stages) > 1 else (),
    )


def _best_candidate(
    config: training_config.TrainConfig, candidates: list[results_lib.SweepCandidate]
) -> results_lib.SweepCandidate:
    """The recipe's choice: the lowest mean validation loss (converged), or the highest validation
    top-1 with ties going to the lower loss (thesis)."""
    if config.rule.plateau_metric == "loss":
        return min(candidates, key=lambda row: (row.validation_loss, -row.validation_top1))
    return max(candidates, key=lambda row: (row.validation_top1, -row.validation_loss))


def _settings(config: training_config.TrainConfig) -> dict:
    """The run's identity as given (before its stages and learning rate are resolved):
    config.json."""
    settings = {
        key: value for key, value in dataclasses.asdict(config).items() if key not in NOT_IDENTITY
    }
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


def learning_rate_sweep(
    config: training_config.TrainConfig,
    stop: interrupt.StopRequests | None = None,
    features: dict | None = None,
) -> results_lib.Sweep:
    """The learning rate of the first stage trained by SGD: the given one, or with "auto" the best
    on validation of a sweep (none when every stage is solved).

    Each candidate trains that stage (after a solved first stage: from the solved layer, solved once
    for all of them) from the same start, at most sweep_epochs, under the run's own rule, once per
    sweep seed; the recipe's metric decides (see _best_candidate): the converged recipe takes the
    lowest validation loss averaged over the seeds, so that no one seed's tie picks the rate.
    Candidates write no export and no TensorBoard runs, only the sweep's summary; finished ones are
    kept, so a rerun resumes the sweep.
    """
    if not isinstance(config.learning_rate, str):
        return results_lib.Sweep(chosen=float(config.learning_rate))
    manifest = manifest_lib.Manifest.read(config.records_dir)
    first = 1 if solves_first_stage(config, manifest) else 0
    if first == len(config.stages):
        return results_lib.Sweep(
            chosen=None,
            chosen_by="no learning rate: the decision layer is solved, its L2 strength chosen on "
            "validation",
        )
    swept_node = config.stages[first]
    directory = config.sweep_dir or run_directory.RunDirectory(config.logdir).sweep_dir
    seed = config.seed if config.sweep_seed is None else config.sweep_seed
    epochs = config.sweep_epochs or config.max_epochs_per_stage
    candidates = []
    for rate in config.sweep_rates:
        stages = []
        for offset in range(config.sweep_seeds):
            # The first seed's trial keeps the folder it always had: sweeps made before several
            # seeds existed resume.
            name = f"lr{rate:g}" if offset == 0 else f"lr{rate:g}-seed{seed + offset}"
            trial = dataclasses.replace(
                config,
                logdir=os.path.join(directory, name),
                stages=config.stages[: first + 1],
                learning_rate=rate,
                max_epochs_per_stage=epochs,
                seed=seed + offset,
                sweep_dir=None,
                sweep_seed=None,
                export=False,
                refit=False,
                summaries=False,
            )
            # A candidate is judged by its own validation scores: the stock model's, the same for
            # every candidate, is left to the run itself.
            run = _train(trial, stop, announce=False, baseline=False, features=features)
            stages.append(run.stages[first])
        candidates.append(_candidate(rate, stages))
    best = _best_candidate(config, candidates)
    tried = ", ".join(
        f"{row.learning_rate:g} ({100 * row.validation_top1:.2f} %, loss {row.validation_loss:.4f})"
        for row in candidates
    )
    metric = (
        "lowest mean validation loss"
        if config.rule.plateau_metric == "loss"
        else ("highest validation top-1, then loss")
    )
    over = f" over {config.sweep_seeds} seeds" if config.sweep_seeds > 1 else ""
    print(
        f"learning-rate sweep (at most {epochs:g} epochs each at {swept_node}{over}; validation "
        f"top-1, loss): {tried}; chose {best.learning_rate:g} ({metric})"
    )
    sweep = results_lib.Sweep(
        chosen=best.learning_rate,
        candidates=tuple(candidates),
        node=swept_node,
        epochs=epochs,
        directory=directory,
        chosen_by=f"the {metric}{over}",
    )
    os.makedirs(distribute.writable(directory), exist_ok=True)
    fileio.write_json_atomic(
        distribute.writable(os.path.join(directory, "sweep.json")), sweep.to_json()
    )
    tensorboard_logs.sweep_summary(distribute.writable(directory), sweep)
    return sweep


def _train_seeds(
    config: training_config.TrainConfig, stop: interrupt.StopRequests | None, features=None
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
        runs.append(_train(seeded, stop, features=features))
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
