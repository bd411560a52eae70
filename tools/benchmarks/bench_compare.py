"""How fast, and how close to each arm's optimum, jpeg-ladder-compare answers: the baseline, concat
and shared, side by side in one run on one records folder.

  1. compare as it runs by default: every linear layer solved (pipeline.training.solved), the
     records read once, each arm's deterministic run standing for its seeds;
  2. an in-memory reference of the same arms, written here apart from the pipeline: float64 NumPy,
     scipy's L-BFGS over 11 L2 strengths from 1e-1 to 1e-6 chosen on validation loss, no refit
     (the linear-probe protocol of Kornblith et al. 2019), from the features read once;
  3. compare by today's SGD recipe (--solver sgd: Adam at the rate a sweep chose, each stage
     until its validation loss stops falling, every seed trained), unless --skip-sgd.
Prints each arm's test top-1 under each and the wall time of each, with their ratios; --json
writes every number.

Run from the project root (records of pool, e.g. make-tfrecords --nodes pool; the SGD compare is
the slow part: about 7 minutes on 2 cores for imagenette-mini):
  PYTHONPATH=. python tools/benchmarks/bench_compare.py --records R --out-dir /tmp/bench_compare \\
      --branches ladder --seeds 3
"""

import argparse
import dataclasses
import json
import os
import shutil
import time

import numpy as np
import scipy.optimize

from pipeline import branches as branches_lib
from pipeline.analysis import compare
from pipeline.config import analysis as analysis_config
from pipeline.config import training as training_config
from pipeline.training import features as features_lib
from tfrecords import manifest as manifest_lib

FUSIONS = ("concat", "shared")
REFERENCE_STRENGTHS = tuple(float(value) for value in np.logspace(-1, -6, 11))


def _reference_fit(features, labels, classes, l2, start):
    """L2-regularised multinomial logistic regression: mean cross-entropy + l2/2 |W|^2."""
    width = features.shape[1]

    def objective(parameters):
        kernel = parameters[: width * classes].reshape(width, classes)
        logits = features @ kernel + parameters[width * classes :]
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        rows = np.arange(len(labels))
        loss = -np.mean(np.log(probabilities[rows, labels] + 1e-300))
        probabilities[rows, labels] -= 1
        probabilities /= len(labels)
        gradient = np.concatenate(
            [(features.T @ probabilities + l2 * kernel).ravel(), probabilities.sum(axis=0)]
        )
        return loss + 0.5 * l2 * np.sum(kernel**2), gradient

    start = np.zeros(width * classes + classes) if start is None else start
    return scipy.optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 2000}
    ).x


def _reference_arm(fusion: str, splits: dict, classes: int) -> float:
    """Test top-1 of one arm solved by the reference: the L2 strength of the lowest validation
    loss."""

    def rows(split):
        features, labels = splits[split]
        if fusion == "concat":
            return features.reshape(len(features), -1), labels
        return features.reshape(-1, features.shape[-1]), np.repeat(labels, features.shape[1])

    def predict(parameters, split):
        features = splits[split][0]
        width = features.shape[-1] if fusion != "concat" else features[0].size
        kernel = parameters[: width * classes].reshape(width, classes)
        flat = rows(split)[0]
        logits = flat @ kernel + parameters[width * classes :]
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        if fusion != "concat":
            probabilities = probabilities.reshape(len(features), -1, classes).mean(axis=1)
        return probabilities

    train_features, train_labels = rows("train")
    best, start = None, None
    for l2 in REFERENCE_STRENGTHS:
        start = _reference_fit(train_features, train_labels, classes, l2, start)
        validation = predict(start, "validation")
        labels = splits["validation"][1]
        loss = -np.mean(np.log(validation[np.arange(len(labels)), labels] + 1e-12))
        if best is None or loss < best[0]:
            best = (loss, start)
    test = predict(best[1], "test")
    return float(np.mean(test.argmax(axis=1) == splits["test"][1]))


def reference(records: str, branches) -> tuple[dict, float]:
    """{arm: test top-1} of the reference, and its wall time (reading the features included)."""
    started = time.perf_counter()
    manifest = manifest_lib.Manifest.read(records)
    positions = list(branches_lib.resolve(branches, manifest.branch_names))
    features = features_lib.Features.load(manifest, "pool")
    # The dataset's own classes, numbered 0..K-1 as the records hold them.
    classes = len(manifest.class_names)
    splits = {}
    for name in ("train", "validation", "test"):
        split = features.split(name)
        splits[name] = (split.features.astype(np.float64), split.labels.astype(np.int64))
    original = {name: (value[0][:, :1], value[1]) for name, value in splits.items()}
    top1 = {"baseline": _reference_arm("concat", original, classes)}
    for fusion in FUSIONS:
        chosen = {name: (value[0][:, positions], value[1]) for name, value in splits.items()}
        top1[fusion] = _reference_arm(fusion, chosen, classes)
    return top1, time.perf_counter() - started


def run_compare(
    records: str, out_dir: str, branches, seeds: int, solver: str
) -> tuple[dict, float]:
    """{arm: mean test top-1 over its runs} of jpeg-ladder-compare, and its wall time."""
    shutil.rmtree(out_dir, ignore_errors=True)
    rule = dataclasses.replace(
        analysis_config.compare_training(),
        seeds=seeds,
        solver=solver,
        label_space="dataset",
        export=False,
        progress=False,
    )
    config = analysis_config.CompareConfig(
        records_dir=records,
        out_dir=out_dir,
        fusions=FUSIONS,
        branch_sets=(tuple(branches),) if branches else None,
        training=rule,
    )
    started = time.perf_counter()
    result = compare.compare(config)
    seconds = time.perf_counter() - started
    return {
        arm.partition("[")[0]: entry["top1_mean"] for arm, entry in result["arms"].items()
    }, seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="make-tfrecords --out-dir, node pool")
    parser.add_argument("--out-dir", required=True, help="where the comparisons are written")
    parser.add_argument("--branches", default=None, help="the arms' branches (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-sgd", action="store_true", help="leave out the SGD compare")
    parser.add_argument("--json", default=None, help="write every number here")
    arguments = parser.parse_args(argv)
    branches = training_config.branch_tokens(arguments.branches) if arguments.branches else None
    runs = {}
    runs["solver"] = run_compare(
        arguments.records,
        os.path.join(arguments.out_dir, "solver"),
        branches,
        arguments.seeds,
        "auto",
    )
    runs["reference"] = reference(arguments.records, branches)
    if not arguments.skip_sgd:
        runs["sgd"] = run_compare(
            arguments.records,
            os.path.join(arguments.out_dir, "sgd"),
            branches,
            arguments.seeds,
            "sgd",
        )
    names = list(runs)
    print("| arm | " + " | ".join(f"{name} top-1 %" for name in names) + " |")
    print("|---|" + "---:|" * len(names))
    for arm in ("baseline",) + FUSIONS:
        print(
            f"| {arm} | " + " | ".join(f"{100 * runs[name][0][arm]:.2f}" for name in names) + " |"
        )
    print("| wall time s | " + " | ".join(f"{runs[name][1]:.0f}" for name in names) + " |")
    for name in names[1:]:
        print(f"wall time {name} / solver: {runs[name][1] / runs['solver'][1]:.2f}")
    figures = {name: {"top1": top1, "seconds": seconds} for name, (top1, seconds) in runs.items()}
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump(
                {"records": arguments.records, "seeds": arguments.seeds, **figures}, file, indent=1
            )
    return figures


if __name__ == "__main__":
    main()
