"""jpeg-ladder-prune: prune an MLP head's hidden neurons by distinctiveness
(pipeline.analysis.distinctiveness), fine-tune, repeat, and record every cycle.

The head comes from a training run (--logdir) or is trained here on the records (--records); each
cycle prunes, fine-tunes by the recipe and scores validation and test; the inflection decides
where the curve ends. pruning.json holds the figures (pipeline.analysis.pruning_render renders
them as pruning.md and the plot).
"""

import dataclasses
import os
import resource

import keras
import numpy as np
import tensorflow as tf

from bottlenecks import imagenet
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.analysis import distinctiveness
from pipeline.analysis import pruning_render
from pipeline.config import analysis as analysis_config
from pipeline.training import heads
from pipeline.training import metrics
from pipeline.training import run_directory
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

RESULTS_NAME = "pruning.json"


def memory_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak, in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    now = resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------
# Features, scoring and the job


@dataclasses.dataclass
class Features:
    """In-memory head inputs per split. With `per_branch` > 1 every branch is a sample of its own
    (rows image-major) and an image's scores are the mean of its branches' probabilities."""

    splits: dict  # split -> (features [N * per_branch, D], labels [N])
    per_branch: int
    test_split: str  # "test", or "validation" when the records have no test split
    image_ids: dict = dataclasses.field(default_factory=dict)  # split -> [N] bytes

    def samples(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        features, labels = self.splits[split]
        return features, np.repeat(labels, self.per_branch)


def load_features(
    manifest: manifest_lib.Manifest,
    node: str,
    branches,
    fusion: str,
    label_map=None,
    batch_size: int = 256,
) -> Features:
    """Every split of `node` in memory: concat -> [N, branches * D]; other fusions -> one row per
    branch."""
    splits, image_ids = {}, {}
    available = [split for split in ("train", "validation", "test") if manifest.num_records(split)]
    for split in ("train", "validation"):
        if split not in available:
            raise errors.UserError(
                f"the records in {manifest.directory} have no {split} images; rerun "
                "make_tfrecords with --validation-percent above 0 or a train/val folder layout"
            )
    for split in available:
        features, labels, ids = [], [], []
        for bottlenecks, batch_labels, batch_ids in reader.make_dataset(
            manifest,
            node,
            split,
            batch_size,
            branches=branches_lib.resolve(branches, manifest.branch_names) if branches else None,
            with_ids=True,
        ):
            features.append(bottlenecks.numpy())
            labels.append(batch_labels.numpy())
            ids.append(batch_ids.numpy())
        features, labels = np.concatenate(features), np.concatenate(labels)
        image_ids[split] = np.concatenate(ids)
        if label_map is not None:
            labels = np.asarray(label_map)[labels]
        per_branch = 1 if fusion == "concat" else features.shape[1]
        splits[split] = (
            features.reshape(len(features) * per_branch, -1).astype(np.float32),
            labels.astype(np.int32),
        )
    return Features(splits, per_branch, "test" if "test" in splits else "validation", image_ids)


def score(head, features: Features, split: str) -> dict:
    inputs, labels = features.splits[split]
    logits = np.concatenate(
        [np.asarray(head(inputs[start : start + 4096])) for start in range(0, len(inputs), 4096)]
    )
    probabilities = (
        tf.nn.softmax(logits).numpy().reshape(len(labels), features.per_branch, -1).mean(axis=1)
    )
    return metrics.top_k_accuracy(probabilities, labels, metrics.TOP_KS)


def load_run(logdir: str, results, manifest: manifest_lib.Manifest):
    """The MLP head of a run's first stage (it must read `pool`), restored from that stage's best
    checkpoint, and the run's features (results and manifest: the run's, as the job read them)."""
    if results.head.get("kind") != "mlp":
        raise errors.UserError(
            f"the run in {logdir} has a {results.head.get('kind')} head: pruning needs a run "
            "trained with --head mlp"
        )
    if not results.stages or results.stages[0].node != "pool":
        raise errors.UserError(
            f"the run in {logdir} has no finished first stage reading pool: train one with "
            "--stages pool first"
        )
    label_map = None
    if results.label_space == "imagenet":
        label_map = imagenet.imagenet_indices(manifest.class_names, True)
    num_classes = 1000 if label_map is not None else len(manifest.class_names)
    features = load_features(manifest, "pool", results.branch_indices, results.fusion, label_map)
    head = heads.from_description(results.head, num_classes, features.splits["train"][0].shape[1])
    tf.train.Checkpoint(head=head).read(
        results.stages[0].checkpoint
    ).expect_partial().assert_existing_objects_matched()
    return (
        head,
        features,
        {"run": fileio.abspath(logdir), "fusion": results.fusion, "records": results.records},
    )


def _fit(head, features: Features, config: analysis_config.PruneConfig) -> dict:
    return heads.fit(
        head,
        features.samples("train"),
        features.samples("validation"),
        recipe=config.fit.recipe,
        learning_rate=config.fit.learning_rate,
        eager=True,  # flat memory over hundreds of cycles (see heads.fit)
        momentum=config.fit.momentum,
        batch_size=config.fit.batch_size,
        max_epochs=config.fit.max_epochs,
        patience=config.fit.patience,
        seed=config.fit.seed,
    )


def starting_head(config: analysis_config.PruneConfig):
    """The head to prune: the run's, or (with --records) one trained here on the branches'
    concatenation by the recipe (heads.fit: converged trains it until validation loss stops
    falling)."""
    run = run_directory.read(config.logdir) if config.logdir is not None else None
    # The job's one read of the records' manifest: the run's records, or --records.
    manifest = manifest_lib.Manifest.read(run.records if run is not None else config.records_dir)
    if run is not None:
        return load_run(config.logdir, run, manifest)
    features = load_features(manifest, "pool", config.branches, "concat")
    head = heads.from_description(
        heads.description(
            "mlp", config.fit.hidden_units, config.fit.activation, config.fit.dropout
        ),
        len(manifest.class_names),
        features.splits["train"][0].shape[1],
        seed=config.fit.seed,
    )
    training = _fit(head, features, config)
    return (
        head,
        features,
        {
            "records": fileio.abspath(config.records_dir),
            "fusion": "concat",
            "branches": list(branches_lib.resolve(config.branches, manifest.branch_names)),
            "starting_head_epochs": training["epochs"],
        },
    )


def _cycle_record(weights: heads.MlpWeights, head, features: Features) -> dict:
    record = {
        "neurons": weights.hidden_units,
        **distinctiveness.flops(weights.input_size, weights.hidden_units, weights.num_classes),
    }
    for name, split in (("validation", "validation"), ("test", features.test_split)):
        record.update(
            {f"{name}_{key}": value for key, value in score(head, features, split).items()}
        )
    record["test_split"] = features.test_split
    return record


def prune(config: analysis_config.PruneConfig) -> dict:
    """Runs the prune -> fine-tune -> repeat loop; writes pruning.json, pruning.md, pruning.png,
    TensorBoard scalars and the head at the inflection (a tf.train.Checkpoint(head=...)) under
    out_dir."""
    head, features, source = starting_head(config)
    activation, dropout = heads.activation_name(head), heads.dropout_rate(head)
    os.makedirs(config.out_dir, exist_ok=True)
    writer = tf.summary.create_file_writer(
        os.path.join(config.out_dir, "tensorboard", config.method)
    )
    reference = distinctiveness.RECIPE_REFERENCE[config.fit.recipe]
    state = {"weights": heads.get_mlp_weights(head), "head": head}
    initial = state["weights"]
    curve = []  # validation top-1 per cycle
    # The heads the inflection may still land on: the last inflection_patience + 1 cycles' (it is
    # the cycle before the first run of that many low ones), and the inflection's once found.
    # Keeping every cycle's head would grow the process by a head per cycle.
    kept = {}

    def keep(cycle: int, weights: heads.MlpWeights) -> None:
        kept[cycle] = weights
        found = distinctiveness.inflection(
            curve, config.tolerance, config.inflection_patience, False, reference
        )
        for old in list(kept):
            if old != found and old < cycle - config.inflection_patience:
                del kept[old]

    def log(record: dict) -> None:
        with writer.as_default(step=initial.hidden_units - record["neurons"]):
            for key in (
                "validation_top1",
                "validation_top5",
                "test_top1",
                "test_top5",
                "neurons",
                "flops",
                "memory_mib",
            ):
                tf.summary.scalar(f"pruning/{key}", record[key])
        writer.flush()
        if config.progress:
            print(
                f"jpeg-ladder-prune: {record['neurons']} neurons, validation top-1 "
                f"{100 * record['validation_top1']:.2f} %",
                flush=True,
            )

    def next_cycle(cycle: int):
        weights = state["weights"]
        activations = heads.hidden_activations(state["head"], features.samples("train")[0])
        removed = {"similar": 0, "complementary": 0, "constant": 0}
        for _ in range(config.steps_per_cycle):
            step = distinctiveness.prune_step(weights, activations, config)
            if step is None:
                break
            weights, activations, removals = step
            for removal in removals:
                removed[removal.kind] += len(removal.removed)
        if weights is state["weights"]:
            return None
        # Every cycle builds a new head: Keras's global state (layer names) would otherwise grow.
        keras.backend.clear_session()
        pruned = heads.mlp_from_weights(
            weights, activation=activation, dropout=dropout, seed=config.fit.seed + cycle
        )
        merged_top1 = score(pruned, features, "validation")["top1"]
        training = _fit(pruned, features, config)
        state["weights"], state["head"] = heads.get_mlp_weights(pruned), pruned
        record = {
            **_cycle_record(state["weights"], pruned, features),
            "removed": removed,
            "validation_top1_before_fine_tuning": merged_top1,
            "fine_tuning_epochs": training["epochs"],
        }
        curve.append(record["validation_top1"])
        keep(cycle, state["weights"])
        record["memory_mib"] = memory_mib()[0]
        log(record)
        return record

    first = _cycle_record(initial, head, features)
    curve.append(first["validation_top1"])
    keep(0, initial)
    first["memory_mib"] = memory_mib()[0]
    log(first)
    cycles, inflection_cycle = distinctiveness.run_cycles(
        first,
        next_cycle,
        tolerance=config.tolerance,
        patience=config.inflection_patience,
        max_cycles=config.max_cycles,
        stop_at_inflection=config.stop_at_inflection,
        reference=reference,
    )
    writer.close()
    result = {
        "method": config.method,
        "input_size": initial.input_size,
        "num_classes": initial.num_classes,
        "cycles": cycles,
        "inflection_cycle": inflection_cycle,
        "recipe": config.fit.recipe,
        "inflection_reference": reference,
        "peak_memory_mib": memory_mib()[1],
    }
    fileio.write_json_atomic(os.path.join(config.out_dir, RESULTS_NAME), result)
    best = heads.mlp_from_weights(kept[inflection_cycle], activation=activation, dropout=dropout)
    tf.train.Checkpoint(head=best).write(os.path.join(config.out_dir, "inflection_head", "ckpt"))
    fileio.write_text_atomic(
        os.path.join(config.out_dir, "pruning.md"), pruning_render.markdown(result, source, config)
    )
    pruning_render.plot(result, os.path.join(config.out_dir, "pruning.png"))
    print(pruning_render.summary_text(result))
    return result
