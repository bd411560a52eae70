"""The comparison protocol: does the JPEG ladder help on these records?

Every arm (the single-branch baseline and each fusion of all branches, or with --branch-sets of
each set of branches, keyed "<fusion>[<set>]") is trained by one rule: the
same learning-rate sweep on validation, the same plateau rule, the same schedule and the same seeds.
Every arm is then scored on the test split, which nothing in training reads, through evaluate's one
path. OUT/
  runs/<arm>/sweep/            the arm's learning-rate sweep (shared by its seeds; an arm
                               "shared[ladder,object]" lives in runs/shared-ladder+object/)
  runs/<arm>/seed<k>/          one training run per seed (TensorBoard, checkpoints, export)
  comparison.json              the figures, in the shape other tools read (see `compare`)
  comparison.md, *.png         the table and plots
A rerun of the same command resumes: finished runs are kept, the one in progress resumes.
"""

import dataclasses
import os

import numpy as np
import tqdm

from pipeline import branches as branches_lib
from pipeline import config as config_lib
from pipeline import plots
from pipeline.analysis import evaluate
from pipeline.analysis import statistics
from pipeline.training import run_directory
from pipeline.training import train
from tfrecords import fileio
from tfrecords import manifest as manifest_lib

BASELINE = "baseline"


def arm_key(fusion: str, branch_set=None) -> str:
    """An arm's name: the fusion, and with --branch-sets its set, e.g. "shared[ladder,object]"."""
    return fusion if branch_set is None else f"{fusion}[{branches_lib.set_label(branch_set)}]"


def arm_directory(arm: str) -> str:
    """An arm's folder under runs/: its key without the characters file patterns read as globs
    (TensorFlow's checkpoint reader would take "[ladder]" for a character class):
    shared[ladder,object] -> shared-ladder+object."""
    return arm.replace("[", "-").replace("]", "").replace(",", "+")


def arms(config: config_lib.CompareConfig) -> dict:
    """{arm: (fusion, branch tokens or None for every branch)}: the baseline (the original alone),
    then every fusion on every branch set."""
    found = {BASELINE: ("concat", (0,))}
    for branch_set in config.branch_sets or (None,):
        for fusion in config.fusions:
            found[arm_key(fusion, branch_set)] = (fusion, branch_set)
    return found


def arm_training(
    config: config_lib.CompareConfig, arm: str, seed_index: int
) -> config_lib.TrainConfig:
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
        sweep_dir=os.path.join(runs, "sweep"),
        seeds=1,
        seed=template.seed + seed_index,
        sweep_seed=template.seed,
        # The FBSD head is one stage on its own nodes' maps, whatever the rule's stages.
        stages=None if template.head == "fbsd" else template.stages,
    )


def evaluation_split(manifest: manifest_lib.Manifest) -> str:
    """test when the records have one; else validation, and every output says it was used for
    selection."""
    return "test" if manifest.num_records("test") else "validation"


def compare(config: config_lib.CompareConfig, stop=None) -> dict:
    """Trains and scores every arm; writes comparison.json/.md and returns the JSON object.

    {"split": "test", "num_images": N, "recipe": "converged",
     "arms": {arm: {"top1": [per seed], "top1_mean", "top1_std", "top5": [...], "top5_mean",
                    "top5_std", "ended_by": [per seed: [per stage]], "capped": bool,
                    "learning_rate": chosen, "seconds": [per seed], "oracle_gap_closed": share,
                    "beyond_oracle": points}},
     "versus_baseline": {fusion: {"difference_mean", "ci95": [lo, hi], "p_value", "wins",
                                  "losses"}},
     "oracle_top1": o,
     "branch_sets": {set: {"branches": [names], "oracle_top1": o}},  (with --branch-sets; each
                                                         set arm's oracle_gap_closed is its set's)
     "refit": {"arms": ..., "versus_baseline": ...}}  (with --refit: the models trained again on
                                                         train + validation, scored the same way)
    Accuracies are fractions; the difference is the fusion's top-1 minus the baseline's, its
    interval a bootstrap over images (paired) and over each arm's seeds, so that seed-to-seed spread
    counts; its p-value an exact McNemar (sign) test over images with the seeds pooled per image,
    which does not see that spread: the verdict follows the interval. The share of the oracle gap
    an arm closes is at most 1; an arm above the oracle (which it can be: concat learns from all
    branches at once) has its excess in beyond_oracle.
    """
    manifest = manifest_lib.Manifest.read(config.records_dir)
    split = evaluation_split(manifest)
    sets = _branch_sets(config, manifest)
    selected, refitted = _Scores(), _Scores()
    oracle, set_oracles = [], {label: [] for label in sets}
    runs = [(arm, seed) for arm in arms(config) for seed in range(config.training.seeds)]
    with tqdm.tqdm(runs, unit="run", desc="compare", disable=not config.training.progress) as bar:
        for arm, seed in bar:
            bar.set_postfix(arm=arm, seed=seed)
            training = arm_training(config, arm, seed)
            results = train.train_and_evaluate(training, stop)
            baseline_logdir = training.logdir if arm == BASELINE else None
            export_dir = run_directory.RunDirectory(training.logdir).export_dir
            predictions = evaluate.predictions_from_records(
                export_dir, manifest, baseline_logdir, split
            )
            selected.add(arm, predictions, results)
            if results.refit:
                refit_baseline = results.refit["logdir"] if arm == BASELINE else None
                refitted.add(
                    arm,
                    evaluate.predictions_from_records(
                        results.refit["export"], manifest, refit_baseline, split
                    ),
                    results,
                )
            if arm == BASELINE:
                oracle.append(_oracle(predictions))
                for label, positions in sets.items():
                    set_oracles[label].append(_oracle(predictions, positions))
    extra = {"recipe": config.training.resolved().recipe}
    set_figures = {
        label: {
            "branches": [manifest.branch_names[position] for position in positions],
            "oracle_top1": float(np.mean(set_oracles[label])),
        }
        for label, positions in sets.items()
    }
    result = summarise(
        *selected.figures(), float(np.mean(oracle)), split, extra, set_figures or None
    )
    if refitted.right:
        refit = summarise(
            *refitted.figures(), result["oracle_top1"], split, branch_sets=set_figures or None
        )
        result["refit"] = {"arms": refit["arms"], "versus_baseline": refit["versus_baseline"]}
    write(result, config.out_dir)
    print(verdict(result))
    return result


class _Scores:
    """Per arm and seed: which test images it got right, its top-5, how its stages ended."""

    def __init__(self):
        self.right, self.top5, self.ended_by, self.rates, self.seconds = {}, {}, {}, {}, {}

    def add(self, arm: str, predictions, results) -> None:
        order = np.argsort(predictions.image_ids)  # the same image order for every run
        ranks = evaluate.ranks(predictions.topology[order], predictions.labels[order])
        self.right.setdefault(arm, []).append(ranks == 1)
        self.top5.setdefault(arm, []).append(float(np.mean(ranks <= 5)))
        self.ended_by.setdefault(arm, []).append([stage.ended_by for stage in results.stages])
        self.seconds.setdefault(arm, []).append(sum(stage.seconds for stage in results.stages))
        self.rates[arm] = results.learning_rate_sweep.chosen

    def figures(self) -> tuple:
        return self.right, self.top5, self.ended_by, self.rates, self.seconds


def _branch_sets(config: config_lib.CompareConfig, manifest: manifest_lib.Manifest) -> dict:
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


def summarise(
    right: dict,
    top5: dict,
    ended_by: dict,
    rates: dict,
    seconds: dict,
    oracle_top1: float,
    split: str,
    extra: dict | None = None,
    branch_sets: dict | None = None,
) -> dict:
    """comparison.json's object from each arm's per-seed correctness [seeds][images] and top-5;
    branch_sets: {set label: {"branches", "oracle_top1"}}, each set's arms measured against its
    oracle."""

    def mean_std(values):
        values = np.asarray(values, np.float64)
        return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0

    arms = {}
    for arm, per_seed in right.items():
        top1 = [float(np.mean(seed_right)) for seed_right in per_seed]
        arms[arm] = {
            "top1": top1,
            "top5": top5[arm],
            "ended_by": ended_by[arm],
            "capped": any("max_epochs" in stages for stages in ended_by[arm]),
            "learning_rate": rates[arm],
            "seconds": seconds[arm],
        }
        arms[arm]["top1_mean"], arms[arm]["top1_std"] = mean_std(top1)
        arms[arm]["top5_mean"], arms[arm]["top5_std"] = mean_std(top5[arm])
    baseline = arms[BASELINE]["top1_mean"]
    for arm, entry in arms.items():
        label = arm[arm.index("[") + 1 : -1] if arm.endswith("]") else None
        oracle = branch_sets[label]["oracle_top1"] if branch_sets and label else oracle_top1
        gap = oracle - baseline
        share = (entry["top1_mean"] - baseline) / gap if gap > 0 else None
        entry["oracle_gap_closed"] = None if share is None else min(share, 1.0)
        entry["beyond_oracle"] = max(0.0, entry["top1_mean"] - oracle)
    versus = {}
    for arm in right:
        if arm == BASELINE:
            continue
        differences = np.asarray(right[arm], np.float64) - np.asarray(right[BASELINE], np.float64)
        versus[arm] = {
            "difference_mean": float(differences.mean()),
            "ci95": statistics.bootstrap_interval_seeds(right[arm], right[BASELINE]),
            **statistics.paired_sign_test(differences),
        }
    return {
        "split": split,
        "num_images": int(np.shape(right[BASELINE])[-1]),
        "arms": arms,
        "versus_baseline": versus,
        "oracle_top1": oracle_top1,
        **({"branch_sets": branch_sets} if branch_sets else {}),
        **(extra or {}),
    }


def verdict(result: dict) -> str:
    """The answer in one sentence."""
    versus = result["versus_baseline"]
    if not versus:
        return "compare: only the baseline was trained."
    best = max(versus, key=lambda arm: versus[arm]["difference_mean"])
    low, high = versus[best]["ci95"]
    difference = 100 * versus[best]["difference_mean"]
    where = f"on the {result['split']} split ({result['num_images']} images)"
    if low > 0:
        answer = f"the ladder helps: {best} beats the baseline by {difference:+.2f} points"
    elif high < 0:
        answer = (
            f"the ladder hurts: even the best fusion, {best}, trails the baseline by "
            f"{difference:+.2f} points"
        )
    else:
        answer = (
            f"no clear effect: the best fusion, {best}, differs from the baseline by "
            f"{difference:+.2f} points"
        )
    caveats = ""
    capped = [arm for arm, entry in result["arms"].items() if entry["capped"]]
    if capped:
        caveats += f"; WARNING: {', '.join(capped)} hit the epoch cap while still improving"
    if result["split"] != "test":
        caveats += (
            "; these figures come from the split used for model selection (the records "
            "have no test split)"
        )
    covers = " (includes 0)" if low <= 0 <= high else ""
    return (
        f"compare: {answer} {where}, 95 % interval [{100 * low:+.2f}, {100 * high:+.2f}]{covers}, "
        f"McNemar p = {versus[best]['p_value']:.3g}{caveats}."
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]  # str.capitalize() would lower-case "McNemar"


def _percent(value) -> str:
    return f"{100 * value:.2f}"


def _gap(entry: dict) -> str:
    """The share of the oracle gap an arm closes, as it reads: above the oracle, by how much."""
    if entry["oracle_gap_closed"] is None:
        return ""
    if entry.get("beyond_oracle", 0) > 0:
        return f"100 % and {_percent(entry['beyond_oracle'])} points beyond the oracle"
    return f"{100 * entry['oracle_gap_closed']:.0f} %"


def _table(arms: dict, versus_baseline: dict) -> list[str]:
    lines = [
        "| arm | top-1 % (mean ± sd) | top-5 % | seeds | learning rate | difference vs baseline "
        "| 95 % interval | p | oracle gap closed | training s per seed | stages ended by |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for arm, entry in arms.items():
        versus = versus_baseline.get(arm)
        compared = (
            f"{_percent(versus['difference_mean'])} | [{_percent(versus['ci95'][0])}, "
            f"{_percent(versus['ci95'][1])}] | {versus['p_value']:.3g}"
            if versus
            else " | | "
        )
        lines.append(
            f"| {arm} | {_percent(entry['top1_mean'])} ± {_percent(entry['top1_std'])} | "
            f"{_percent(entry['top5_mean'])} | {len(entry['top1'])} | {entry['learning_rate']:g} "
            f"| {compared} | {_gap(entry)} | {np.mean(entry.get('seconds') or [np.nan]):.0f} | "
            + ("**epoch cap while improving** " if entry["capped"] else "")
            + "; ".join(",".join(stages) for stages in entry["ended_by"])
            + " |"
        )
    return lines


def markdown(result: dict) -> str:
    recipe = result.get("recipe")
    lines = [
        "# Does the JPEG ladder help?",
        "",
        _sentence(verdict(result).removeprefix("compare: ")),
        "",
        f"Scored on the **{result['split']}** split, {result['num_images']} images; oracle (any "
        f"branch of the baseline model right) top-1 {_percent(result['oracle_top1'])} %."
        + "".join(
            f" Oracle of the set {label} ({', '.join(entry['branches'])}): "
            f"{_percent(entry['oracle_top1'])} %."
            for label, entry in (result.get("branch_sets") or {}).items()
        )
        + (f" Every arm trained by the **{recipe}** recipe." if recipe else ""),
        "",
        *_table(result["arms"], result["versus_baseline"]),
        "",
        "Interval: bootstrap over the test images (paired) and over each arm's seeds, so "
        "seed-to-seed spread counts. p: exact McNemar test over images with the seeds pooled per "
        "image, which does not see that spread. The verdict follows the interval.",
    ]
    if result.get("refit"):
        lines += [
            "",
            "## Refit: each arm trained again on train + validation with its selected schedule",
            "",
            "The same arms, the same test images; these models saw the validation images too, so "
            "nothing was chosen on them.",
            "",
            *_table(result["refit"]["arms"], result["refit"]["versus_baseline"]),
        ]
    if result["split"] != "test":
        lines += [
            "",
            "**These figures come from the validation split, which also chose the checkpoints and "
            "the learning rates: they are optimistic. Make records with a test split.**",
        ]
    lines += ["", "![top-1 per arm](comparison.png)", ""]
    return "\n".join(lines)


def _plot(result: dict, path: str) -> None:
    arms = list(result["arms"])
    figure, axes = plots.figure(figsize=(7, 4))
    means = [100 * result["arms"][arm]["top1_mean"] for arm in arms]
    errors = [100 * result["arms"][arm]["top1_std"] for arm in arms]
    bars = axes.bar(arms, means, yerr=errors, capsize=4, color=["gray"] + ["C0"] * (len(arms) - 1))
    capped = [bar for bar, arm in zip(bars, arms) if result["arms"][arm]["capped"]]
    for bar in capped:  # still improving at the cap: not trained to its best
        bar.set(hatch="//", edgecolor="red")
    if capped:
        capped[0].set_label("hit the epoch cap while improving")
    for arm_index, arm in enumerate(arms):
        axes.scatter(
            [arm_index] * len(result["arms"][arm]["top1"]),
            [100 * value for value in result["arms"][arm]["top1"]],
            color="black",
            s=10,
            zorder=3,
        )
    axes.axhline(
        100 * result["oracle_top1"], linestyle=":", color="green", label="oracle (any branch right)"
    )
    axes.set_ylabel(f"{result['split']} top-1 % (bars: mean ± sd; dots: seeds)")
    low = min(min(100 * value for value in result["arms"][arm]["top1"]) for arm in arms)
    axes.set_ylim(max(0, low - 10), min(100, 100 * result["oracle_top1"] + 5))
    axes.legend(fontsize=8)
    plots.save(figure, path)


def write(result: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    fileio.write_json_atomic(os.path.join(out_dir, "comparison.json"), result)
    _plot(result, os.path.join(out_dir, "comparison.png"))
    fileio.write_text_atomic(os.path.join(out_dir, "comparison.md"), markdown(result))
