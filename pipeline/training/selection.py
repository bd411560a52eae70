"""Runs of runs: what a run chooses by training other runs, and the role each such run plays.

    seeds(config)              N seeded runs sharing one sweep, reported as mean ± sd
    learning_rate_sweep(...)   the rate of the first SGD stage: the candidates' lowest validation
                               loss (converged) or best top-1 (thesis), each candidate a short run
    by_folds(...)              --folds K: the rate and each stage's schedule chosen by K-fold
                               cross-validation over train + validation, then a replay on all
    refit(...)                 --refit: the selected schedule replayed on train + validation

Each of them re-enters the trainer through the one function it is given (`train`: one run,
pipeline.training.train's), with a Role saying what that run is to it. A Role is not an option: no
flag sets it, and a run's identity (config.json) records it beside the config.
"""

import dataclasses
import os

import numpy as np

from pipeline.config import training as training_config
from pipeline.training import distribute
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import tensorboard_logs
from tfrecords import fileio
from tfrecords import manifest as manifest_lib

REFIT_NAME = "refit"


@dataclasses.dataclass(frozen=True)
class Role:
    """What a run is to the selection that made it; the default is a run of its own.

    sweep_dir, sweep_seed: where its learning-rate sweep lives and its seed (runs with the same rule
    share one: compare's seeds of an arm, a run's seeds); fold (K, i): it trains on the train and
    validation images outside fold i of K and chooses on fold i; replay: it trains on train +
    validation with a fixed schedule (per stage, its phases) and chooses nothing; combiner_source:
    the run whose weighted or gated combiner a replay keeps; summaries: False for the runs a
    selection tries and throws away (sweep candidates, folds), which write no TensorBoard runs.
    """

    sweep_dir: str | None = None
    sweep_seed: int | None = None
    fold: tuple[int, int] | None = None
    replay: tuple[tuple[training_config.Phase, ...], ...] | None = None
    combiner_source: str | None = None
    summaries: bool = True

    @property
    def plain(self) -> bool:
        """A run that chooses on its own validation split: neither a fold nor a replay."""
        return self.fold is None and self.replay is None

    def identity(self) -> dict:
        """What config.json records of it (the keys it always had)."""
        entry = dataclasses.asdict(self)
        entry.pop("summaries")
        return entry


def seeds(config: training_config.TrainConfig, role: Role, stop, features, train):
    """N independent runs (seeded initialisation and shuffling) sharing one sweep; results as mean
    ± sd."""
    run = run_directory.RunDirectory(config.logdir)
    runs = []
    for index in range(config.seeds):
        seeded = dataclasses.replace(
            config, logdir=run.seed_logdir(index), seeds=1, seed=config.seed + index
        )
        seeded_role = dataclasses.replace(
            role,
            sweep_dir=role.sweep_dir or run.sweep_dir,
            sweep_seed=config.seed if role.sweep_seed is None else role.sweep_seed,
        )
        runs.append(train(seeded, seeded_role, stop, features=features))
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


def first_trained_stage(solves_first: bool) -> int:
    """The index of the first stage trained by SGD: after a solved one, the second."""
    return 1 if solves_first else 0


def learning_rate_sweep(
    config: training_config.TrainConfig, role: Role, solves_first: bool, stop, features, train
) -> results_lib.Sweep:
    """The learning rate of the first stage trained by SGD: the given one, or with "auto" the best
    on validation of a sweep (none when every stage is solved).

    Each candidate trains that stage (after a solved first stage: from the solved layer, solved once
    for all of them) from the same start, at most sweep_epochs, under the run's own rule, once per
    sweep seed; the recipe's metric decides (see best_candidate): the converged recipe takes the
    lowest validation loss averaged over the seeds, so that no one seed's tie picks the rate.
    Candidates write no export and no TensorBoard runs, only the sweep's summary; finished ones are
    kept, so a rerun resumes the sweep.
    """
    if not isinstance(config.learning_rate, str):
        return results_lib.Sweep(chosen=float(config.learning_rate))
    first = first_trained_stage(solves_first)
    if first == len(config.stages):
        return results_lib.Sweep(
            chosen=None,
            chosen_by="no learning rate: the decision layer is solved, its L2 strength chosen on "
            "validation",
        )
    swept_node = config.stages[first]
    directory = role.sweep_dir or run_directory.RunDirectory(config.logdir).sweep_dir
    seed = config.seed if role.sweep_seed is None else role.sweep_seed
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
                export=False,
                refit=False,
            )
            # A candidate is judged by its own validation scores: the stock model's, the same for
            # every candidate, is left to the run itself.
            run = train(
                trial,
                Role(summaries=False),
                stop,
                announce=False,
                baseline=False,
                features=features,
            )
            stages.append(run.stages[first])
        candidates.append(candidate(rate, stages))
    best = best_candidate(config, candidates)
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


def refit(
    config: training_config.TrainConfig,
    selected: results_lib.Results,
    stop,
    features,
    train,
) -> results_lib.Results:
    """--refit: the selected schedule (each stage's phases; a solved stage's L2 strength) trained
    again on train + validation, in LOGDIR/refit with its own export; returns the selected run's
    results naming it."""
    run = run_directory.RunDirectory(config.logdir)
    again = dataclasses.replace(config, logdir=run.path(REFIT_NAME), refit=False, seeds=1)
    role = Role(
        replay=tuple(stage.phases for stage in selected.stages), combiner_source=config.logdir
    )
    refitted = train(
        again,
        role,
        stop,
        announce=False,
        baseline=False,
        sweep=results_lib.Sweep(
            chosen=config.learning_rate if not isinstance(config.learning_rate, str) else None,
            chosen_by="the selected run's schedule (its phases at each rate), trained again on "
            "train + validation",
        ),
        features=features,
    )
    return dataclasses.replace(
        selected,
        refit={"logdir": again.logdir, "export": refitted.export and refitted.export["path"]},
    )


def by_folds(
    config: training_config.TrainConfig,
    identity: dict,
    manifest: manifest_lib.Manifest,
    solves_first: bool,
    stop,
    announce: bool,
    features,
    train,
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
    first = first_trained_stage(solves_first)
    if first == len(config.stages):
        rates = (None,)
    else:
        rates = (
            config.sweep_rates if isinstance(config.learning_rate, str) else (config.learning_rate,)
        )
    candidates, fold_runs = [], {}
    for rate in rates:
        runs = [
            train(
                dataclasses.replace(
                    config,
                    logdir=run.path("folds", _rate_folder(rate), f"fold{index}"),
                    learning_rate=config.learning_rate if rate is None else rate,
                    folds=1,
                    refit=False,
                    export=False,
                ),
                Role(fold=(count, index), summaries=False),
                stop,
                announce=False,
                baseline=False,
                features=features,
            )
            for index in range(count)
        ]
        fold_runs[rate] = runs
        judged = min(first, len(config.stages) - 1)
        candidates.append(candidate(rate, [fold.stages[judged] for fold in runs]))
    best = best_candidate(config, candidates)
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
    )
    role = Role(
        replay=replay,
        combiner_source=run.path("folds", _rate_folder(best.learning_rate), "fold0"),
    )
    return train(
        final,
        role,
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
        l2 = float(np.exp(np.median(np.log([phase.l2 for phase in phases]))))
        return training_config.Phase(0.0, 0.0, l2=l2)
    return training_config.Phase(
        phases[0].learning_rate, float(np.median([phase.epochs for phase in phases]))
    )


def candidate(rate, stages: list[results_lib.StageResult]) -> results_lib.SweepCandidate:
    """A candidate rate's figures: the mean over its runs (seeds or folds) of the stage it is judged
    by."""
    return results_lib.SweepCandidate(
        rate,
        float(np.mean([stage.best_top1 for stage in stages])),
        float(np.mean([stage.best_loss for stage in stages])),
        results_lib.MAX_EPOCHS if any(stage.capped for stage in stages) else results_lib.PLATEAU,
        tuple(stage.best_loss for stage in stages) if len(stages) > 1 else (),
    )


def best_candidate(
    config: training_config.TrainConfig, candidates: list[results_lib.SweepCandidate]
) -> results_lib.SweepCandidate:
    """The recipe's choice: the lowest mean validation loss (converged), or the highest validation
    top-1 with ties going to the lower loss (thesis)."""
    if config.rule.plateau_metric == "loss":
        return min(candidates, key=lambda row: (row.validation_loss, -row.validation_top1))
    return max(candidates, key=lambda row: (row.validation_top1, -row.validation_loss))
