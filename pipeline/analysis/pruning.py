"""Pruning an MLP head's hidden neurons by distinctiveness (Gedeon and Harris): prune, fine-tune,
repeat.

A hidden neuron's activation vector over the training set, mean-centred, says what it does; the
angle between two neurons' vectors says how alike they are (0 degrees: the same up to scale and
offset; 180: one is the other's complement). Methods, each applied once per cycle before
fine-tuning:
    threshold               every disjoint pair under `similar_degrees` merges (one removed), every
                            pair over
                            `complementary_degrees` is removed (both, or one); stops when no pair
                            qualifies
    most-similar            the pair of smallest angle merges
    similar-complementary   the pair of smallest angle merges and the pair of largest angle is
                            removed
    batch                   of the three most similar neurons, two are removed into the survivor (3
                            -> 2)
A neuron whose activation is constant over the training set has no angle; it is removed exactly, its
constant output folded into the next layer's bias.
"""

import dataclasses
import os
import resource

import keras
import numpy as np
import tensorflow as tf

from bottlenecks import registry
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.config import analysis as analysis_config
from pipeline.training import heads
from pipeline.training import metrics
from pipeline.training import run_directory
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

RESULTS_NAME = "pruning.json"
TOP_KS = (1, 5, 10)
CONSTANT_STD = 1e-6  # relative to the largest activation: below it a neuron counts as constant
# What the inflection is measured against, per recipe (see inflection).
INFLECTION_REFERENCES = ("best", "start")
RECIPE_REFERENCE = {"converged": "best", "thesis": "start"}


@dataclasses.dataclass(frozen=True)
class Removal:
    """Neurons to remove; their outgoing weights merge into `survivor`, or with None fold into the
    bias."""

    removed: tuple[int, ...]
    survivor: int | None
    kind: str  # "similar", "complementary" or "constant"


# ------------------------------------------------------------------------------------------
# Distinctiveness and selection


def constant_neurons(activations: np.ndarray) -> list[int]:
    activations = np.asarray(activations, np.float64)
    scale = max(float(np.abs(activations).max(initial=0.0)), 1.0)
    return [int(index) for index in np.flatnonzero(activations.std(axis=0) <= CONSTANT_STD * scale)]


def angles(activations: np.ndarray) -> np.ndarray:
    """Degrees between every two neurons' mean-centred activation vectors [H, H]; NaN on the
    diagonal and for constant neurons."""
    centred = np.asarray(activations, np.float64)
    centred = centred - centred.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    constant = np.zeros(len(norms), bool)
    constant[constant_neurons(activations)] = True
    unit = centred / np.where(constant, 1.0, norms)
    result = np.degrees(np.arccos(np.clip(unit.T @ unit, -1.0, 1.0)))
    result[constant, :] = np.nan
    result[:, constant] = np.nan
    np.fill_diagonal(result, np.nan)
    return result


def _pairs(angle_matrix: np.ndarray) -> list[tuple[float, int, int]]:
    rows, columns = np.triu_indices(len(angle_matrix), k=1)
    values = angle_matrix[rows, columns]
    finite = np.isfinite(values)
    return [
        (float(value), int(row), int(column))
        for value, row, column in zip(values[finite], rows[finite], columns[finite])
    ]


def _complementary_removal(first: int, second: int, complementary: str) -> Removal:
    if complementary == "both":
        return Removal((first, second), None, "complementary")
    return Removal((second,), first, "complementary")


def select(
    angle_matrix: np.ndarray,
    method: str,
    *,
    similar_degrees: float = 15.0,
    complementary_degrees: float = 165.0,
    complementary: str = "both",
) -> list[Removal]:
    """The removals one cycle of `method` makes; disjoint, and [] when the method finds nothing to
    do."""
    if method not in analysis_config.PRUNE_METHODS:
        raise errors.UserError(
            f"unknown method {method!r}: use one of {', '.join(analysis_config.PRUNE_METHODS)}"
        )
    pairs = sorted(
        _pairs(angle_matrix)
    )  # by angle, then by index: ties resolve the same way every time
    if not pairs:
        return []
    if method == "threshold":
        used, removals = set(), []
        for angle, first, second in pairs:
            if angle < similar_degrees and not {first, second} & used:
                removals.append(Removal((second,), first, "similar"))
                used |= {first, second}
        for angle, first, second in sorted(pairs, key=lambda pair: (-pair[0], pair[1], pair[2])):
            if angle > complementary_degrees and not {first, second} & used:
                removals.append(_complementary_removal(first, second, complementary))
                used |= {first, second}
        return removals
    _, first, second = pairs[0]
    if method == "most-similar":
        return [Removal((second,), first, "similar")]
    if method == "similar-complementary":
        removals = [Removal((second,), first, "similar")]
        others = [pair for pair in pairs if not {pair[1], pair[2]} & {first, second}]
        if others:
            _, widest_first, widest_second = max(
                others, key=lambda pair: (pair[0], -pair[1], -pair[2])
            )
            removals.append(_complementary_removal(widest_first, widest_second, complementary))
        return removals
    # batch: the third neuron is the one whose larger angle to the pair is smallest.
    candidates = [
        (max(angle_matrix[first, other], angle_matrix[second, other]), other)
        for other in range(len(angle_matrix))
        if other not in (first, second) and np.isfinite(angle_matrix[first, other])
    ]
    if not candidates:
        return [Removal((second,), first, "similar")]
    _, third = min(candidates)
    return [Removal((second, third), first, "similar")]


# ------------------------------------------------------------------------------------------
# Merging


def _scale_and_offset(
    survivor: np.ndarray, removed: np.ndarray, kind: str, merge: str
) -> tuple[float, float]:
    """removed ~= scale * survivor + offset over the training set.

    `add` is the papers' rule (scale +1 for a similar pair, -1 and the mean sum for a complementary
    one); `scaled` fits both by least squares, which is exact whenever the two vectors are at 0 or
    180 degrees.
    """
    survivor, removed = np.asarray(survivor, np.float64), np.asarray(removed, np.float64)
    if merge == "add":
        if kind == "complementary":
            return -1.0, float(np.mean(survivor + removed))
        return 1.0, 0.0
    variance = float(np.var(survivor))
    scale = (
        float(np.mean((survivor - survivor.mean()) * (removed - removed.mean())) / variance)
        if variance
        else 0.0
    )
    return scale, float(removed.mean() - scale * survivor.mean())


def merge(
    weights: heads.MlpWeights,
    activations: np.ndarray,
    removals: list[Removal],
    mode: str = "scaled",
) -> tuple[heads.MlpWeights, np.ndarray]:
    """The head without the removed neurons, and the kept neurons' indices.

    A removed neuron's outgoing weights are added to its survivor's (times the fitted scale, the
    offset going to the next layer's bias); removed without a survivor, its mean output goes to the
    bias.
    """
    output_kernel = weights.output_kernel.astype(np.float64)
    output_bias = weights.output_bias.astype(np.float64)
    gone = set()
    for removal in removals:
        for neuron in removal.removed:
            outgoing = output_kernel[neuron].copy()
            if removal.survivor is None:
                output_bias += float(np.mean(activations[:, neuron])) * outgoing
            else:
                scale, offset = _scale_and_offset(
                    activations[:, removal.survivor], activations[:, neuron], removal.kind, mode
                )
                output_kernel[removal.survivor] += scale * outgoing
                output_bias += offset * outgoing
            output_kernel[neuron] = 0.0
            gone.add(neuron)
    keep = np.array(
        [neuron for neuron in range(weights.hidden_units) if neuron not in gone], np.int64
    )
    return heads.MlpWeights(
        weights.hidden_kernel[:, keep],
        weights.hidden_bias[keep],
        output_kernel[keep].astype(np.float32),
        output_bias.astype(np.float32),
    ), keep


def prune_step(
    weights: heads.MlpWeights, activations: np.ndarray, config: analysis_config.PruneConfig
):
    """One selection: constant neurons folded away, then the method's removals. None when nothing is
    left to do."""
    removals = []
    constant = constant_neurons(activations)
    if constant:
        removals.append(Removal(tuple(constant), None, "constant"))
    remaining = weights.hidden_units - len(constant)
    angle_matrix = angles(activations)
    for removal in select(
        angle_matrix,
        config.method,
        similar_degrees=config.similar_degrees,
        complementary_degrees=config.complementary_degrees,
        complementary=config.complementary,
    ):
        if remaining - len(removal.removed) < config.min_neurons:
            break
        removals.append(removal)
        remaining -= len(removal.removed)
    if not removals or remaining < config.min_neurons:
        return None
    new_weights, keep = merge(weights, activations, removals, config.merge)
    return new_weights, activations[:, keep], removals


# ------------------------------------------------------------------------------------------
# Cost, the inflection and the loop


def flops(input_size: int, hidden_units: int, num_classes: int) -> dict:
    """The papers' count, fan-in + fan-out + 2 per hidden neuron (2048-500-11: 2,061 each, 1,030,500
    in all), beside the plain multiply-add count of the two layers."""
    return {
        "flops": hidden_units * (input_size + num_classes + 2),
        "multiply_adds": hidden_units * (input_size + num_classes),
    }


def inflection(
    validation_top1: list[float],
    tolerance: float,
    patience: int = 1,
    complete: bool = False,
    reference: str = "best",
) -> int | None:
    """The inflection point of the pruning curve: the last cycle before the first run of `patience`
    consecutive cycles whose validation top-1 is more than `tolerance` (a fraction) below the
    reference; None while there is none.

    The reference of cycle c is the best validation top-1 of the cycles before it ("best": a head
    that fine-tuning keeps improving is judged against what it reached, not against its weaker
    start) or cycle 0's ("start": the thesis recipe's rule). Pruning up to and including the
    inflection costs at most `tolerance` of validation top-1; the next cycle is where the curve
    turns down for good (`patience` > 1 ignores a single dip, e.g. two images of a small validation
    set). With `complete` (the curve has ended) a shorter run that reaches its end counts too. Only
    validation decides: test figures never move it.
    """
    if reference not in INFLECTION_REFERENCES:
        raise ValueError(f"reference must be one of {INFLECTION_REFERENCES}, got {reference!r}")
    best_before = np.maximum.accumulate(validation_top1)
    below = [False] + [
        top1 < (best_before[cycle - 1] if reference == "best" else validation_top1[0]) - tolerance
        for cycle, top1 in enumerate(validation_top1)
        if cycle
    ]
    for cycle in range(1, len(below)):
        run = below[cycle : cycle + patience]
        if all(run) and (len(run) == patience or complete):
            return cycle - 1
    return None


def run_cycles(
    cycle_zero: dict,
    next_cycle,
    *,
    tolerance: float,
    patience: int = 1,
    max_cycles: int | None = None,
    stop_at_inflection: bool = True,
    reference: str = "best",
) -> tuple[list[dict], int]:
    """Cycles [cycle_zero, next_cycle(1), next_cycle(2), ...] until next_cycle returns None,
    `max_cycles`, or (with `stop_at_inflection`) the first cycle past the inflection. Returns them
    and the inflection cycle (the last cycle when the curve never dropped)."""
    cycles = [cycle_zero]
    while max_cycles is None or len(cycles) <= max_cycles:
        record = next_cycle(len(cycles))
        if record is None:
            break
        cycles.append(record)
        curve = [cycle["validation_top1"] for cycle in cycles]
        if (
            stop_at_inflection
            and inflection(curve, tolerance, patience, False, reference) is not None
        ):
            break
    found = inflection(
        [cycle["validation_top1"] for cycle in cycles], tolerance, patience, True, reference
    )
    return cycles, len(cycles) - 1 if found is None else found


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
                "make_tfrecords with "
                "--validation-percent above 0 or a train/val folder layout"
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
    return metrics.top_k_accuracy(probabilities, labels, TOP_KS)


def load_run(logdir: str):
    """The MLP head of a run's first stage (it must read `pool`), restored from that stage's best
    checkpoint, and the run's features."""
    results = run_directory.read(logdir)
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
    manifest = manifest_lib.Manifest.read(results.records)
    label_map = None
    if results.label_space == "imagenet":
        label_map = registry.imagenet_indices(manifest.class_names, True)
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
    if config.logdir is not None:
        return load_run(config.logdir)
    manifest = manifest_lib.Manifest.read(config.records_dir)
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
        **flops(weights.input_size, weights.hidden_units, weights.num_classes),
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
    reference = RECIPE_REFERENCE[config.fit.recipe]
    state = {"weights": heads.get_mlp_weights(head), "head": head}
    initial = state["weights"]
    curve = []  # validation top-1 per cycle
    # The heads the inflection may still land on: the last inflection_patience + 1 cycles' (it is
    # the cycle before the first run of that many low ones), and the inflection's once found.
    # Keeping every cycle's head would grow the process by a head per cycle.
    kept = {}

    def keep(cycle: int, weights: heads.MlpWeights) -> None:
        kept[cycle] = weights
        found = inflection(curve, config.tolerance, config.inflection_patience, False, reference)
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
            step = prune_step(weights, activations, config)
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
    cycles, inflection_cycle = run_cycles(
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
        os.path.join(config.out_dir, "pruning.md"), markdown(result, source, config)
    )
    plot(result, os.path.join(config.out_dir, "pruning.png"))
    print(summary_text(result))
    return result


def summary_text(result: dict) -> str:
    cycle = result["cycles"][result["inflection_cycle"]]
    first = result["cycles"][0]
    return (
        f"jpeg-ladder-prune ({result['method']}): {first['neurons']} -> {cycle['neurons']} "
        "neurons at the "
        f"inflection (cycle {result['inflection_cycle']}), {cycle['flops']:,} of "
        f"{first['flops']:,} FLOPs left; "
        f"validation top-1 {100 * first['validation_top1']:.2f} -> "
        f"{100 * cycle['validation_top1']:.2f} %, "
        f"test top-1 {100 * first['test_top1']:.2f} -> {100 * cycle['test_top1']:.2f} %; "
        f"{len(result['cycles']) - 1} cycles ({result.get('recipe', 'thesis')} recipe), peak "
        f"memory {result.get('peak_memory_mib', float('nan')):.0f} MiB"
        + (
            ""
            if cycle["test_split"] == "test"
            else " (no test split: test figures are validation's)"
        )
    )


def markdown(result: dict, source: dict, config: analysis_config.PruneConfig) -> str:
    first = result["cycles"][0]
    test_name = (
        "test" if first["test_split"] == "test" else "validation (the records have no test split)"
    )
    lines = [
        f"# Pruning by distinctiveness: {result['method']}",
        "",
        f"Head {result['input_size']}-{first['neurons']}-{result['num_classes']} from "
        f"{source.get('run') or source['records']} (fusion {source['fusion']}); merge rule "
        f"`{config.merge}`, "
        f"{config.steps_per_cycle} selection(s) per cycle, fine-tuning with early stopping on "
        "validation "
        f"(patience {config.fit.patience}).",
        "",
        "FLOPs follow the papers: fan-in + fan-out + 2 per hidden neuron; multiply-adds count the "
        "two layers' "
        "products only.",
        f'The "test" columns are measured on {test_name}.',
        "",
        *(
            [
                f"Fusion {source['fusion']}: scores here are the plain mean of the branches' "
                "probabilities (the "
                "run's learned branch weights are not applied).",
                "",
            ]
            if source["fusion"] in ("weighted", "gated")
            else []
        ),
        f"Inflection: cycle {result['inflection_cycle']}, the last before validation top-1 falls "
        f"more than {100 * config.tolerance:g} points below "
        + (
            "the best of the cycles before"
            if result["inflection_reference"] == "best"
            else "cycle 0"
        )
        + f" ({config.inflection_patience} cycle(s) in a row); fine-tuning by the "
        f"{result['recipe']} recipe. Peak memory {result['peak_memory_mib']:.0f} MiB.",
        "",
        "| cycle | neurons | FLOPs | multiply-adds | validation top-1 | top-5 | top-10 "
        "| test top-1 | top-5 | top-10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, cycle in enumerate(result["cycles"]):
        marker = " (inflection)" if index == result["inflection_cycle"] else ""
        lines.append(
            f"| {index}{marker} | {cycle['neurons']} | {cycle['flops']:,} | "
            f"{cycle['multiply_adds']:,} | "
            + " | ".join(
                f"{100 * cycle[f'{split}_top{k}']:.2f}"
                for split in ("validation", "test")
                for k in TOP_KS
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
    """Top-1 against neurons removed and against FLOPs removed, the inflection marked."""
    from pipeline import plots  # matplotlib only when a plot is drawn

    cycles = result["cycles"]
    removed = np.array([cycles[0]["neurons"] - cycle["neurons"] for cycle in cycles])
    flops_removed = np.array([cycles[0]["flops"] - cycle["flops"] for cycle in cycles])
    figure, axes = plots.figure(1, 2, figsize=(10, 4), sharey=True)
    for axis, x_values, label in (
        (axes[0], removed, "hidden neurons removed"),
        (axes[1], flops_removed, "FLOPs removed (fan-in + fan-out + 2 per neuron)"),
    ):
        for key, name in (
            ("validation_top1", "validation"),
            ("test_top1", cycles[0]["test_split"]),
        ):
            axis.plot(
                x_values, [100 * cycle[key] for cycle in cycles], marker=".", label=f"{name} top-1"
            )
        axis.axvline(
            x_values[result["inflection_cycle"]], color="grey", linestyle="--", label="inflection"
        )
        axis.set_xlabel(label)
    axes[0].set_ylabel("top-1 (%)")
    axes[0].legend()
    figure.suptitle(f"Pruning by distinctiveness ({result['method']})")
    plots.save(figure, path)
