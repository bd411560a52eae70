"""The comparison protocol: which branches help on these records, and does the JPEG ladder?

Every arm (the single-branch baseline and each fusion of all branches, or with --branch-sets of
each set of branches, keyed "<fusion>[<set>]") is trained by one rule: the same selection on
validation (a solved layer's L2 path, or the learning-rate sweep and plateau rule), the same
schedule and the same seeds. One process does it all: the records of the arms' node are read once
into memory and every arm and seed trains and is scored from there; an arm whose layer is solved is
deterministic, so one run stands for every seed. Every arm is scored on the test split, which
nothing in training reads; the kept runs are exported after all are scored. OUT/
  runs/<arm>/sweep/            the arm's learning-rate sweep, when it trains by SGD (shared by its
                               seeds; an arm "shared[ladder,object]" lives in
                               runs/shared-ladder+object/)
  runs/<arm>/seed<k>/          one training run per seed (checkpoints, TensorBoard, export)
  comparison.json              the figures, in the shape other tools read (pipeline.analysis.
                               comparison), each arm's serving cost beside its accuracy
  comparison.md, *.png         the table, the ablation and the plot
A rerun of the same command resumes: finished runs are kept, the one in progress resumes.
"""

import dataclasses
import os

import numpy as np
import tqdm

from pipeline import branches as branches_lib
from pipeline import interrupt
from pipeline.analysis import comparison
from pipeline.analysis import comparison_render
from pipeline.analysis import evaluate
from pipeline.analysis import predictions as predictions_lib
from pipeline.analysis import serving_cost
from pipeline.config import analysis as analysis_config
from pipeline.config import training as training_config
from pipeline.training import features as features_lib
from pipeline.training import fusion as fusion_lib
from pipeline.training import prepare as prepare_lib
from pipeline.training import run_directory
from pipeline.training import selection
from pipeline.training import solved
from pipeline.training import train
from tfrecords import fileio
from tfrecords import manifest as manifest_lib

BASELINE = comparison.BASELINE
COST_NAME = "serving_cost.json"  # beside a run: its export's serving cost, measured once


def arm_key(fusion: str, branch_set=None) -> str:
    """An arm's name: the fusion, and with --branch-sets its set, e.g. "shared[ladder,object]"."""
    return fusion if branch_set is None else f"{fusion}[{branches_lib.set_label(branch_set)}]"


def arm_directory(arm: str) -> str:
    """An arm's folder under runs/: its key without the characters file patterns read as globs
    (TensorFlow's checkpoint reader would take "[ladder]" for a character class):
    shared[ladder,object] -> shared-ladder+object."""
    return arm.replace("[", "-").replace("]", "").replace(",", "+")


def arms(config: analysis_config.CompareConfig) -> dict:
    """{arm: (fusion, branch tokens or None for every branch)}: the baseline (the original alone),
    then every fusion on every branch set."""
    found = {BASELINE: ("concat", (0,))}
    for branch_set in config.branch_sets or (None,):
        for fusion in config.fusions:
            found[arm_key(fusion, branch_set)] = (fusion, branch_set)
    return found


def arm_training(
    config: analysis_config.CompareConfig, arm: str, seed_index: int
) -> training_config.TrainConfig:
    """The one training rule (config.training), instantiated for an arm and a seed."""
    runs = os.path.join(config.out_dir, "runs", arm_directory(arm))
    template = config.training
    fusion, branch_set = arms(config)[arm]
    return dataclasses.replace(
        template,
        records_dir=config.records_dir,
        logdir=os.path.join(runs, f"seed{seed_index}"),
        branches=branch_set,
        fusion=fusion,
        seeds=1,
        seed=template.seed + seed_index,
        # The FBSD head is one stage on its own nodes' maps, whatever the rule's stages.
        stages=None if template.head == "fbsd" else template.stages,
        export=False,  # the kept runs export once every arm is scored
    )


def arm_role(config: analysis_config.CompareConfig, arm: str) -> selection.Role:
    """An arm's seeds share one learning-rate sweep (when it trains by SGD), run with the rule's
    first seed."""
    runs = os.path.join(config.out_dir, "runs", arm_directory(arm))
    return selection.Role(sweep_dir=os.path.join(runs, "sweep"), sweep_seed=config.training.seed)


def evaluation_split(manifest: manifest_lib.Manifest) -> str:
    """test when the records have one; else validation, and every output says it was used for
    selection."""
    return "test" if manifest.num_records("test") else "validation"


def seeds_of(
    config: analysis_config.CompareConfig, manifest: manifest_lib.Manifest, arm: str
) -> int:
    """How many seeded runs an arm takes: one when its layer is solved and nothing else of it is
    seeded (every seed would give the same model), else the rule's seeds."""
    training = prepare_lib.resolve_stages(arm_training(config, arm, 0).resolved(), manifest)
    deterministic = (
        len(training.stages) == 1
        and training.fusion not in fusion_lib.COMBINED
        and train.solves_first_stage(training, manifest)
    )
    return 1 if deterministic else config.training.seeds


def one_rule(
    config: analysis_config.CompareConfig, manifest: manifest_lib.Manifest
) -> analysis_config.CompareConfig:
    """The config by which every arm trains its first stage the same way: when the solver would
    take some arms' and not others' (the widest arms' features over --solver-memory-mb), every
    arm trains it by SGD, so that no arm is compared at its exact optimum against SGD."""
    solves = {
        arm: train.solves_first_stage(
            prepare_lib.resolve_stages(arm_training(config, arm, 0).resolved(), manifest), manifest
        )
        for arm in arms(config)
    }
    if len(set(solves.values())) < 2:
        return config
    print(
        f"compare: the solver would take the first stage of "
        f"{', '.join(arm for arm, solved_arm in solves.items() if solved_arm)} but not of "
        f"{', '.join(arm for arm, solved_arm in solves.items() if not solved_arm)} (over "
        f"--solver-memory-mb {config.training.solver_memory_mb:g}): every arm trains it by SGD"
    )
    return dataclasses.replace(config, training=dataclasses.replace(config.training, solver="sgd"))


def _features(config: analysis_config.CompareConfig, manifest: manifest_lib.Manifest) -> dict:
    """{node: its records in memory}: the first stage's node, when every split of it fits the
    rule's memory budget (--solver-memory-mb), read once for every arm and seed."""
    training = prepare_lib.resolve_stages(config.training.resolved(), manifest)
    if training.head == "fbsd":
        return {}
    node = training.stages[0]
    needed = features_lib.float32_bytes(manifest, node, manifest.splits)
    if needed > training.solver_memory_mb * solved.MIB:
        return {}
    return {node: features_lib.Features.load(manifest, node)}


def compare(
    config: analysis_config.CompareConfig,
    stop=None,
    manifest: manifest_lib.Manifest | None = None,
) -> dict:
    """Trains and scores every arm; writes comparison.json/.md and returns the JSON object (its
    shape: pipeline.analysis.comparison). manifest: the records' manifest, when the caller has read
    it (the demo's job made it)."""
    manifest = manifest or manifest_lib.Manifest.read(config.records_dir)
    config = one_rule(config, manifest)
    split = evaluation_split(manifest)
    sets = _branch_sets(config, manifest)
    store = _features(config, manifest)
    selected, refitted = comparison.Scores(), comparison.Scores()
    oracle, set_oracles = [], {label: [] for label in sets}
    runs = [(arm, seed) for arm in arms(config) for seed in range(seeds_of(config, manifest, arm))]
    arm_branches = {}
    with tqdm.tqdm(runs, unit="run", desc="compare", disable=not config.training.progress) as bar:
        for arm, seed in bar:
            interrupt.stop_if_requested(stop, f"before {arm} seed {seed}, the runs before it kept")
            bar.set_postfix(arm=arm, seed=seed)
            training = arm_training(config, arm, seed)
            results = _train(config, training, arm, stop, store, manifest)
            arm_branches[arm] = (training.fusion, list(results.branches))
            predictions = _predictions(training, manifest, store, split, results, arm == BASELINE)
            selected.add(arm, predictions, results)
            if results.refit:
                refit = dataclasses.replace(training, logdir=results.refit["logdir"])
                refit_results = run_directory.read(refit.logdir)
                refitted.add(
                    arm,
                    _predictions(refit, manifest, store, split, refit_results, arm == BASELINE),
                    refit_results,
                )
            if arm == BASELINE:
                oracle.append(_oracle(predictions))
                for label, positions in sets.items():
                    set_oracles[label].append(_oracle(predictions, positions))
    _export(config, runs, stop, store, manifest)
    costs = _costs(config, manifest, split, runs)
    set_figures = {
        label: {
            "branches": [manifest.branch_names[position] for position in positions],
            "oracle_top1": float(np.mean(set_oracles[label])),
        }
        for label, positions in sets.items()
    }
    extra = {"recipe": config.training.resolved().recipe}
    if selected.l2:
        extra["solver"] = solved.METHOD
    result = comparison.summarise(
        selected,
        float(np.mean(oracle)),
        split,
        arm_branches,
        extra,
        set_figures or None,
        method=solved.METHOD,
        costs=costs,
    )
    if refitted.right:
        refit = comparison.summarise(
            refitted,
            result["oracle_top1"],
            split,
            arm_branches,
            branch_sets=set_figures or None,
            method=solved.METHOD,
        )
        result["refit"] = {"arms": refit["arms"], "versus_baseline": refit["versus_baseline"]}
    comparison_render.write(result, config.out_dir)
    print(comparison_render.verdict(result))
    return result


def _predictions(training, manifest, store, split, results, each_branch: bool):
    """A run's predictions on the evaluation split, from its last stage's best checkpoint."""
    setup = prepare_lib.prepare(_resolved(training, manifest, results), manifest, features=store)
    checkpoint = results.stages[-1].checkpoint
    return predictions_lib.from_run(setup, checkpoint, split, each_branch=each_branch)


def _resolved(training, manifest, results) -> training_config.TrainConfig:
    """The run's config as it trained: its recipe and stages resolved, its learning rate chosen."""
    config = prepare_lib.resolve_stages(training.resolved(), manifest)
    chosen = results.learning_rate_sweep and results.learning_rate_sweep.chosen
    return config if chosen is None else dataclasses.replace(config, learning_rate=chosen)


def _train(config: analysis_config.CompareConfig, training, arm: str, stop, store, manifest):
    """One arm's run (or its seeds'), from the features and manifest the comparison read once."""
    return train.train_and_evaluate(
        training,
        stop,
        announce=False,
        features=store,
        role=arm_role(config, arm),
        manifest=manifest,
    )


def _export(config: analysis_config.CompareConfig, runs, stop, store, manifest) -> None:
    """Writes the export of every kept run that has none yet (a finished run only exports)."""
    if not config.training.export:
        return
    for arm, seed in tqdm.tqdm(
        runs, unit="export", desc="export", disable=not config.training.progress
    ):
        interrupt.stop_if_requested(stop, f"before exporting {arm} seed {seed}")
        training = dataclasses.replace(arm_training(config, arm, seed), export=True)
        _train(config, training, arm, stop, store, manifest)


def _costs(config: analysis_config.CompareConfig, manifest, split: str, runs) -> dict:
    """{arm: its first run's export's serving cost on the evaluation split's images}
    (serving_cost.cost: backbone passes, ms per image at batch 1 and 32), when exported; measured
    once and kept beside the run (COST_NAME), so that a rerun reports the same figures."""
    if not (config.cost_images and config.training.export):
        return {}
    index = serving_cost.source_index(manifest)
    costs = {}
    for arm, seed in runs:
        if seed:
            continue
        run = run_directory.RunDirectory(arm_training(config, arm, 0).logdir)
        kept = fileio.read_json(run.path(COST_NAME))
        if kept is None or kept.get("timed_images", {}).get("1") != config.cost_images:
            kept = serving_cost.split_cost(run.export_dir, index, split, config.cost_images)
            fileio.write_json_atomic(run.path(COST_NAME), kept)
        costs[arm] = kept
    return costs


def _branch_sets(config: analysis_config.CompareConfig, manifest: manifest_lib.Manifest) -> dict:
    """{set label: the records' branch positions it picks}, checked before anything trains."""
    return {
        branches_lib.set_label(tokens): branches_lib.resolve(tokens, manifest.branch_names)
        for tokens in config.branch_sets or ()
    }


def _oracle(predictions, positions=None) -> float:
    """The share of images that some branch (of positions; default every one) of the baseline
    model gets right."""
    order = np.argsort(predictions.image_ids)
    positions = range(predictions.branches.shape[1]) if positions is None else positions
    branch_ranks = np.stack(
        [
            evaluate.ranks(predictions.branches[order][:, branch], predictions.labels[order])
            for branch in positions
        ],
        axis=1,
    )
    return float(np.mean((branch_ranks == 1).any(axis=1)))
