"""comparison.json's figures from every arm's scores: accuracy per arm, each arm against the
baseline, the winner, and with nested branch sets what each added family gives.

    {"split": "test", "num_images": N, "recipe": "converged", "question": "Which branches help?",
     "arms": {arm: {"top1": [per seed], "top1_mean", "top1_std", "top5": [...], "top5_mean",
                    "top5_std", "ended_by": [per seed: [per stage]], "capped": bool,
                    "learning_rate": chosen or None, "solver": {"method", "l2": [per seed]} or
                    None, "seconds": [per seed], "branches": [names], "fusion",
                    "oracle_gap_closed": share, "beyond_oracle": points,
                    "cost": {"backbone_passes", "ms_per_image": {"1", "32"}, ...}}},
                    (cost: its export's serving_default, pipeline.analysis.serving_cost)
     "versus_baseline": {arm: {"difference_mean", "ci95": [lo, hi], "p_value", "wins", "losses"}},
     "winner": {"arm", "branches", "families", "difference_mean", "ci95", "p_value"} or None,
     "ablation": [{"added": family, "to": set, "arm", "over", "difference_mean", "ci95",
                   "p_value", "wins", "losses"}],
     "oracle_top1": o,
     "branch_sets": {set: {"branches": [names], "oracle_top1": o}},  (with --branch-sets)
     "refit": {"arms": ..., "versus_baseline": ...}}  (with --refit)

Accuracies are fractions; a difference is one arm's top-1 minus another's, its interval a
bootstrap over images (paired) and over each arm's seeds, so that seed-to-seed spread counts; its
p-value an exact McNemar (sign) test over images with the seeds pooled per image, which does not see
that spread: verdicts follow the interval. An arm whose layer is solved is deterministic: one run
stands for every seed.
"""

import dataclasses

import numpy as np

from pipeline import branches as branches_lib
from pipeline.analysis import evaluate
from pipeline.analysis import predictions as predictions_lib
from pipeline.analysis import statistics

BASELINE = "baseline"
LADDER_QUESTION = "Does the JPEG ladder help?"
BRANCHES_QUESTION = "Which branches help?"


@dataclasses.dataclass
class Scores:
    """Per arm and seed: which test images it got right, its top-5, how its stages ended, what it
    chose (learning rate, L2 strength) and how long it trained."""

    right: dict = dataclasses.field(default_factory=dict)
    top5: dict = dataclasses.field(default_factory=dict)
    ended_by: dict = dataclasses.field(default_factory=dict)
    rates: dict = dataclasses.field(default_factory=dict)
    l2: dict = dataclasses.field(default_factory=dict)
    seconds: dict = dataclasses.field(default_factory=dict)

    def add(self, arm: str, predictions: predictions_lib.Predictions, results) -> None:
        order = np.argsort(predictions.image_ids)  # the same image order for every run
        ranks = evaluate.ranks(predictions.topology[order], predictions.labels[order])
        self.right.setdefault(arm, []).append(ranks == 1)
        self.top5.setdefault(arm, []).append(float(np.mean(ranks <= 5)))
        self.ended_by.setdefault(arm, []).append([stage.ended_by for stage in results.stages])
        self.seconds.setdefault(arm, []).append(sum(stage.seconds for stage in results.stages))
        self.rates[arm] = results.learning_rate_sweep and results.learning_rate_sweep.chosen
        solved = [stage.solver for stage in results.stages if stage.solver]
        if solved:
            self.l2.setdefault(arm, []).append(solved[0]["l2"])


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def _paired(arm_right, other_right) -> dict:
    """One arm against another on the same images: mean difference, interval, sign test."""
    differences = np.asarray(arm_right, np.float64).mean(axis=0) - np.asarray(
        other_right, np.float64
    ).mean(axis=0)
    return {
        "difference_mean": float(
            np.mean(np.asarray(arm_right, np.float64)) - np.mean(np.asarray(other_right))
        ),
        "ci95": statistics.bootstrap_interval_seeds(arm_right, other_right),
        **statistics.paired_sign_test(differences[None]),
    }


def summarise(
    scores: Scores,
    oracle_top1: float,
    split: str,
    arm_branches: dict | None = None,
    extra: dict | None = None,
    branch_sets: dict | None = None,
    method: str | None = None,
    costs: dict | None = None,
) -> dict:
    """comparison.json's object (see the module docstring). arm_branches: {arm: (fusion, [branch
    names])}; branch_sets: {set label: {"branches", "oracle_top1"}}, each set's arms measured
    against its oracle; method: how the solved arms' layers were solved; costs: {arm: its serving
    cost}."""
    arm_branches = arm_branches or {}
    arms = {}
    for arm, per_seed in scores.right.items():
        top1 = [float(np.mean(seed_right)) for seed_right in per_seed]
        fusion, names = arm_branches.get(arm, (None, None))
        arms[arm] = {
            "top1": top1,
            "top5": scores.top5[arm],
            "ended_by": scores.ended_by[arm],
            "capped": any("max_epochs" in stages for stages in scores.ended_by[arm]),
            "learning_rate": scores.rates.get(arm),
            "solver": {"method": method, "l2": scores.l2[arm]} if arm in scores.l2 else None,
            "seconds": scores.seconds[arm],
            **({"fusion": fusion, "branches": list(names)} if names else {}),
            **({"cost": costs[arm]} if costs and arm in costs else {}),
        }
        arms[arm]["top1_mean"], arms[arm]["top1_std"] = _mean_std(top1)
        arms[arm]["top5_mean"], arms[arm]["top5_std"] = _mean_std(scores.top5[arm])
    baseline = arms[BASELINE]["top1_mean"]
    for arm, entry in arms.items():
        label = arm[arm.index("[") + 1 : -1] if arm.endswith("]") else None
        oracle = branch_sets[label]["oracle_top1"] if branch_sets and label else oracle_top1
        gap = oracle - baseline
        share = (entry["top1_mean"] - baseline) / gap if gap > 0 else None
        entry["oracle_gap_closed"] = None if share is None else min(share, 1.0)
        entry["beyond_oracle"] = max(0.0, entry["top1_mean"] - oracle)
    versus = {
        arm: _paired(scores.right[arm], scores.right[BASELINE])
        for arm in scores.right
        if arm != BASELINE
    }
    return {
        "split": split,
        "num_images": int(np.shape(scores.right[BASELINE])[-1]),
        "question": question(arm_branches),
        "arms": arms,
        "versus_baseline": versus,
        "winner": winner(arms, versus),
        "ablation": ablation(scores, arm_branches),
        "oracle_top1": oracle_top1,
        **({"branch_sets": branch_sets} if branch_sets else {}),
        **(extra or {}),
    }


def question(arm_branches: dict) -> str:
    """What the compared sets ask: whether the JPEG ladder helps when every branch compared is the
    photo or its JPEG re-encodings, else which branches help."""
    names = {name for _, branch_names in arm_branches.values() for name in branch_names or ()}
    families = {branches_lib.family(name) for name in names}
    return LADDER_QUESTION if families <= {branches_lib.LADDER} else BRANCHES_QUESTION


def named_families(names) -> list[str]:
    """The families a branch set holds, as the verdict names them: the ladder only where the set
    holds a JPEG re-encoding, so that the original beside a view is named the original."""
    kinds = list(dict.fromkeys(branches_lib.family(name) for name in names))
    if branches_lib.LADDER in kinds and all(branches_lib.quality(name) is None for name in names):
        kinds[kinds.index(branches_lib.LADDER)] = branches_lib.ORIGINAL
    return kinds


def winner(arms: dict, versus: dict) -> dict | None:
    """The arm of the highest mean top-1 besides the baseline, its branches, families and its
    difference to the baseline."""
    if not versus:
        return None
    best = max(versus, key=lambda arm: (arms[arm]["top1_mean"], versus[arm]["difference_mean"]))
    names = arms[best].get("branches") or []
    return {
        "arm": best,
        "branches": names,
        "families": named_families(names),
        **{key: versus[best][key] for key in ("difference_mean", "ci95", "p_value")},
    }


def set_name(arm: str, names) -> str:
    """An arm's branch set as --branch-sets gave it ("ladder" of "family[ladder]"), else its
    branches' names."""
    if arm.endswith("]"):
        return arm[arm.index("[") + 1 : -1]
    return branches_lib.set_label(names)


def ablation(scores: Scores, arm_branches: dict) -> list[dict]:
    """What each added family gives: for every pair of arms of one fusion whose branch sets nest,
    the larger set holding one family's branches more, the larger arm against the smaller, paired
    (against the baseline, the original alone, every arm is in versus_baseline already)."""
    rows = []
    for arm, (fusion, names) in arm_branches.items():
        for smaller, (other_fusion, other_names) in arm_branches.items():
            if BASELINE in (arm, smaller) or arm == smaller or other_fusion != fusion:
                continue
            added = [name for name in names if name not in other_names]
            if not set(other_names) < set(names):
                continue
            families = set(named_families(added))
            if len(families) != 1:
                continue
            rows.append(
                {
                    "added": families.pop(),
                    "to": set_name(smaller, other_names),
                    "arm": arm,
                    "over": smaller,
                    **_paired(scores.right[arm], scores.right[smaller]),
                }
            )
    return rows
