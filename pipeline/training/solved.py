"""A stage whose decision layer is solved, not trained: a linear head on pooled features under the
converged recipe, for every fusion (pipeline.training.solver does the solving).

    baseline, concat             one layer over each image's features, [N, branches * D]
    shared, family               one layer over every branch's features (an image's branches are
                                 rows of it), the branches' probabilities averaged (family: within
                                 each family, then across families), as their models predict
    weighted, gated              the shared layer, then their combiner stacked on out-of-fold
                                 predictions over train + validation (pipeline.training.stacking)

The L2 strength is chosen on the validation split by the loss of the fusion's own prediction (for
weighted and gated, shared's), along solver.path; a replay (--refit, --folds) solves at the
selected strength on train + validation. The layer is written as the stage's best checkpoint, so
the stages after it (SGD, unfreezing backbone blocks), the export and the evaluation read it as they
read a trained one. A solved layer is the unique optimum whatever its start: seeds and --head-init
do not change it, and fits are kept for the process (FITS) so that seeds, arms and sweep trials
that pose the same problem solve it once.
"""

import time

import numpy as np
import tensorflow as tf

from bottlenecks import registry
from pipeline.config import training as training_config
from pipeline.training import features as features_lib
from pipeline.training import fusion as fusion_lib
from pipeline.training import input_pipeline
from pipeline.training import metrics
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from pipeline.training import solver
from pipeline.training import stacking
from tfrecords import manifest as manifest_lib

METHOD = (
    "L2-regularised multinomial logistic regression solved by L-BFGS-B (scipy.optimize) on float64 "
    "features, the L2 strength chosen on validation loss"
)
MIB = 2**20


def not_solved_because(
    config: training_config.TrainConfig,
    manifest: manifest_lib.Manifest,
    node: str,
    index: int,
    num_branches: int,
) -> str | None:
    """Why the stage reading `node` (at `index` of the schedule, on num_branches branches) trains by
    SGD; None: it is solved."""
    if config.solver == "sgd":
        return "--solver sgd"
    if not config.rule.solves_linear:
        return f"the {config.recipe} recipe trains every stage by SGD"
    if index != 0 or node != registry.POOL:
        return "the stage trains backbone blocks too, which is not a convex problem"
    if config.head != "linear":
        return f"--head {config.head} is not a convex problem"
    needed = memory_needed(manifest, node, num_branches)
    if needed > config.solver_memory_mb * MIB:
        return (
            f"its features take {needed / MIB:.0f} MiB in memory, over --solver-memory-mb "
            f"{config.solver_memory_mb:g}"
        )
    return None


def memory_needed(manifest: manifest_lib.Manifest, node: str, branches: int) -> int:
    """Bytes the solve holds: the node's train and validation records as float32, and the chosen
    branches' rows as float64."""
    shape = manifest.node(node).shape
    images = sum(manifest.num_records(split) for split in ("train", "validation"))
    per_branch = int(np.prod(shape[1:]))
    return images * (4 * shape[0] * per_branch + 8 * branches * per_branch)


class LinearFusion:
    """A fusion's rows and predictions for one linear layer, in NumPy."""

    def __init__(self, fusion: str, family_ids, num_branches: int):
        self.fusion = fusion
        self.per_branch = fusion != "concat"
        if fusion == "family":
            self.weights = fusion_lib.family_weights(family_ids)
        else:  # shared, and the head weighted and gated stack on
            self.weights = np.full(num_branches, 1.0 / num_branches)

    def rows(self, features: np.ndarray) -> np.ndarray:
        """[N, branches, D] -> the layer's rows: [N * branches, D], or concat's [N, branches*D]."""
        count = len(features)
        return features.reshape((-1, features.shape[-1]) if self.per_branch else (count, -1))

    def problem(self, split: features_lib.Split, num_classes: int, basis) -> solver.Problem:
        labels = split.labels
        if self.per_branch:
            labels = np.repeat(labels, split.features.shape[1])
        return solver.Problem(self.rows(split.features), labels, num_classes, basis=basis)

    def branch_probabilities(self, layer: solver.Layer, rows: np.ndarray) -> np.ndarray:
        """[N, branches, classes] from the rows of N images (per-branch fusions)."""
        return solver.softmax(layer.logits(rows)).reshape(-1, len(self.weights), len(layer.bias))

    def probabilities(self, layer: solver.Layer, rows: np.ndarray) -> np.ndarray:
        """The fusion's prediction [N, classes] from the rows of N images."""
        if not self.per_branch:
            return solver.softmax(layer.logits(rows))
        return np.einsum("nbk,b->nk", self.branch_probabilities(layer, rows), self.weights)


# Fits of this process: {(problem key, l2): solver.Fit}. A path starts from the strongest strength
# and warm-starts each next one from the last, so the fit at a strength is the same however often
# the path is walked.
FITS: dict = {}


def _cached(key):
    def solve(problem, l2, start):
        found = FITS.get((key, l2))
        if found is None:
            found = FITS[(key, l2)] = solver.fit(problem, l2, start)
        return found

    return solve


def _rows(setup, store: features_lib.Features, split: str) -> features_lib.Split:
    """The run's train or validation images (input_pipeline.records_of), its branches, labels in the
    head's class space."""
    record_splits, fold = input_pipeline.records_of(setup.role, split)
    rows = store.rows(record_splits, fold)
    labels = rows.labels if setup.label_map is None else setup.label_map[rows.labels]
    if len(labels) and labels.max() >= setup.num_classes:
        raise ValueError(
            "a record's label is beyond the decision layer's classes: the records and the run "
            "disagree"
        )
    return features_lib.Split(rows.features[:, list(setup.branches)], labels, rows.image_ids)


def _key(setup, store, fusion: LinearFusion, split: str) -> tuple:
    record_splits, fold = input_pipeline.records_of(setup.role, split)
    return (
        store.directory,
        store.node,
        record_splits,
        fold,
        tuple(setup.branches),
        fusion.per_branch,
        None if setup.label_map is None else tuple(setup.label_map.tolist()),
        setup.num_classes,
    )


def solve(setup, stage: training_config.Stage, store, writers):
    """Solves the stage's layer (and stacks weighted's or gated's combiner), writes it as the
    stage's best checkpoint and returns the stage's result."""
    config, started = setup.config, time.perf_counter()
    with setup.strategy.scope():  # the head's variables, as an SGD stage after this one needs them
        model = setup.build_model(stage.node)
    fusion = LinearFusion(config.fusion, setup.family_ids, len(setup.branches))
    train = _rows(setup, store, "train")
    pool = train if setup.role.replay is not None else _pool(setup, store, train)
    basis = solver.Basis.of(fusion.rows(pool.features))
    problem = fusion.problem(train, setup.num_classes, basis)
    solve_one = _cached(_key(setup, store, fusion, "train") + (basis_key(basis),))
    if setup.role.replay is not None:  # --refit, --folds: nothing to choose on
        chosen_l2 = setup.role.replay[stage.index][0].l2
        fitted, path, validation = solve_one(problem, chosen_l2, None), None, None
    else:
        validation = _rows(setup, store, "validation")
        projected = basis.project(fusion.rows(validation.features))
        path = solver.path(
            problem,
            lambda layer: solver.log_loss(
                fusion.probabilities(layer, projected), validation.labels
            ),
            solve=solve_one,
        )
        fitted = path.best
    layer = problem.layer(fitted.parameters)
    _set_head(setup.head, layer)
    combiner = None
    if config.fusion in fusion_lib.COMBINED and config.rule.stacked_combiner:
        combiner = _stack(setup, store, fusion, layer, fitted.l2, basis, pool)
    best_path = run_directory.RunDirectory(config.logdir).best_checkpoint(stage)
    tf.train.Checkpoint(**setup.trainable_objects(stage.node)).write(
        run_directory.RunDirectory.writable(best_path)
    )
    scores = None if validation is None else _scores(model, validation)
    if path is not None:
        writers.path(path)
    writers.close()
    return results_lib.StageResult(
        stage=stage.index,
        node=stage.node,
        thesis_block=setup.backbone.thesis_block_names.get(stage.node, stage.node),
        learning_rate=None,
        steps=sum(point.iterations for point in (path.fits if path else (fitted,))),
        best_top1=None if scores is None else scores["top1"],
        best_top5=None if scores is None else scores["top5"],
        best_loss=None if scores is None else scores["loss"],
        checkpoint=best_path,
        seconds=time.perf_counter() - started,
        ended_by=results_lib.SOLVED if path is not None else results_lib.REPLAY,
        phases=(training_config.Phase(0.0, 0.0, l2=fitted.l2),),
        combiner=combiner,
        solver=_description(problem, fitted, path, len(pool)),
    )


def basis_key(basis: solver.Basis) -> tuple:
    return (None,) if basis.vectors is None else basis.vectors.shape


def _pool(setup, store, train: features_lib.Split) -> features_lib.Split:
    """The run's train and validation images: every row a later fit of this run may train on (a
    refit, the out-of-fold heads), so that one basis spans them all."""
    return features_lib.Split.join([train, _rows(setup, store, "validation")])


def _set_head(head, layer: solver.Layer) -> None:
    head.kernel.assign(layer.kernel.astype(np.float32))
    head.bias.assign(layer.bias.astype(np.float32))


def _scores(model, validation: features_lib.Split) -> dict:
    """Validation top-1, top-5 and loss of the stage model (its combiner included), as an SGD
    stage's evaluation measures them."""
    logits = np.concatenate(
        [
            model(validation.features[start : start + 512], training=False)["logits"].numpy()
            for start in range(0, len(validation), 512)
        ]
    )
    labels = validation.labels
    loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return {
        "top1": float(metrics.correct_in_top_k(logits, labels, 1)) / len(labels),
        "top5": float(metrics.correct_in_top_k(logits, labels, 5)) / len(labels),
        "loss": float(np.mean(loss)),
    }


def _stack(setup, store, fusion, layer, l2, basis, pool) -> dict:
    """weighted and gated: their combiner learnt from out-of-fold branch predictions over the train
    and validation images, each fold scored by a layer solved without it (at the chosen strength,
    from the chosen layer), kept only where it beats equal weights (stacking.fit)."""
    folds = stacking.fold_of(pool.image_ids)
    log_probabilities = np.zeros(pool.features.shape[:2] + (setup.num_classes,), np.float32)
    key = _key(setup, store, fusion, "train") + ("out of fold", basis_key(basis))
    for fold in sorted(set(folds.tolist())):
        inside = folds == fold
        problem = fusion.problem(pool.take(~inside), setup.num_classes, basis)
        fitted = _cached(key + (fold,))(problem, l2, problem.parameters(layer))
        held = fusion.branch_probabilities(
            problem.layer(fitted.parameters), fusion.rows(pool.features[inside])
        )
        log_probabilities[inside] = np.log(np.maximum(held, 1e-30))
    held_out = stacking.HeldOut(
        pool.features,
        log_probabilities,
        pool.labels,
        folds,
        f"out-of-fold predictions over the {len(pool)} train and validation images",
    )
    return stacking.fit(setup.combiner, held_out, seed=setup.config.seed)


def _description(problem, fitted, path, rows: int) -> dict:
    """results.json's "solver" of a solved stage."""
    return {
        "method": METHOD,
        "l2": fitted.l2,
        "relative_l2": fitted.l2 / problem.energy if problem.energy else None,
        "converged": fitted.converged,
        "iterations": fitted.iterations,
        "objective": fitted.objective,
        "coordinates": problem.shape[0],
        "images_spanned": rows,
        **({"path": path.to_json()} if path is not None else {"refit": True}),
    }
