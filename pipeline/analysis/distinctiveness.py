"""Pruning hidden neurons by distinctiveness (Gedeon and Harris): the algorithm, apart from any
job. An MLP head's pruning (pipeline.analysis.pruning) and the autoencoder's code layer
(pipeline.analysis.compression) both use it.

A hidden neuron's activation vector over the training set, mean-centred, says what it does; the
angle between two neurons' vectors says how alike they are (0 degrees: the same up to scale and
offset; 180: one is the other's complement). Methods, each applied once per cycle before
fine-tuning:

    threshold               every disjoint pair under `similar_degrees` merges (one removed),
                            every pair over `complementary_degrees` is removed (both, or one);
                            stops when no pair qualifies
    most-similar            the pair of smallest angle merges
    similar-complementary   the pair of smallest angle merges and the pair of largest angle is
                            removed
    batch                   of the three most similar neurons, two are removed into the survivor
                            (3 -> 2)

A neuron whose activation is constant over the training set has no angle; it is removed exactly,
its constant output folded into the next layer's bias. The pruning curve's inflection (the last
cycle before validation top-1 turns down for good) says where to stop.
"""

import dataclasses

import numpy as np

from pipeline import errors
from pipeline.config import analysis as analysis_config
from pipeline.training import heads

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
