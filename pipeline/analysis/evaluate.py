"""Evaluation through one path: the trained topology, the baseline, each branch alone, oracle,
ensemble.

Every figure comes from two prediction arrays over the same images and labels
(pipeline.analysis.predictions): the model's [N, classes], and the baseline model on each branch
alone [N, branches, classes], computed from the cached records or from the raw images through the
same models. evaluation.md is pipeline.analysis.evaluate_render's.
"""

import numpy as np

from pipeline.analysis import evaluate_render
from pipeline.analysis import localisation
from pipeline.analysis import predictions as predictions_lib
from pipeline.analysis import serving_cost
from pipeline.analysis import statistics
from pipeline.config import analysis as analysis_config
from pipeline.offline import images
from pipeline.training import export
from pipeline.training import metrics
from tfrecords import manifest as manifest_lib

SELECTION_NOTE = (
    "these figures come from the validation split, which also chose the checkpoints, plateaus and "
    "learning rates, so they are optimistic: make records with a test split (make-tfrecords "
    "--test-percent, or a val/ or test/ folder)"
)


def records_split(manifest: manifest_lib.Manifest, split: str) -> str:
    """The split to score: test by default; records without one fall back to validation (see
    SELECTION_NOTE)."""
    if split == "test" and not manifest.num_records("test"):
        return "validation"
    if split != "all":
        manifest.split(split)  # an unknown split fails with the available ones
    return split


def ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of each label among its row's scores; ties go to the lower class index, as
    argmax does."""
    return metrics.ranks(scores, labels).numpy()


def _top_k(scores: np.ndarray, labels: np.ndarray) -> dict:
    return metrics.top_k_accuracy(scores, labels, metrics.TOP_KS)


def compare(
    topology_right: np.ndarray, baseline_right: np.ndarray, resamples: int = 10000, seed: int = 0
) -> dict:
    """Type A (topology right, baseline wrong), Type B (the reverse), exact McNemar, bootstrap 95 %
    CI."""
    type_a = int(np.sum(topology_right & ~baseline_right))
    type_b = int(np.sum(~topology_right & baseline_right))
    difference = topology_right.astype(np.float64) - baseline_right.astype(np.float64)
    return {
        "type_a": type_a,
        "type_b": type_b,
        "mcnemar_exact_p": statistics.mcnemar_exact(type_a, type_b),
        "top1_difference": float(difference.mean()),
        "top1_difference_ci95": statistics.bootstrap_interval(difference, resamples, seed),
    }


def evaluate(
    predictions: predictions_lib.Predictions, image_ids=(), split: str | None = None
) -> dict:
    """Every figure of the module docstring; `split` names the images scored (a selection split gets
    a warning)."""
    labels = predictions.labels
    result = {"num_images": len(labels), "topology": _top_k(predictions.topology, labels)}
    if split is not None:
        result["split"] = split
        if split in ("validation", "all"):
            result["selection_warning"] = SELECTION_NOTE
    if predictions.branches is None:
        result["note"] = (
            "no baseline: no stock classifier applies (the classes are not ImageNet's, or the "
            "backbone is a hub: or savedmodel: model without one), so pass --baseline LOGDIR of a "
            "single-branch training (train-block-by-block --branches 0)"
        )
        return result
    branches = predictions.branches
    result["baseline"] = _top_k(branches[:, 0], labels)
    result["branches"] = {
        name: _top_k(branches[:, index], labels)
        for index, name in enumerate(predictions.branch_names)
    }
    branch_ranks = np.stack(
        [ranks(branches[:, index], labels) for index in range(branches.shape[1])], 1
    )
    result["oracle"] = {
        f"top{k}": float(np.mean((branch_ranks <= k).any(axis=1))) for k in metrics.TOP_KS
    }
    result["ensemble"] = _top_k(branches.mean(axis=1), labels)
    topology_right = predictions.topology.argmax(1) == labels
    baseline_right = branches[:, 0].argmax(1) == labels
    result["versus_baseline"] = compare(topology_right, baseline_right)
    result["images"] = {
        image_id: image_table(predictions, predictions.image_ids.index(image_id))
        for image_id in image_ids
        if image_id in predictions.image_ids
    }
    missing = [image_id for image_id in image_ids if image_id not in predictions.image_ids]
    if missing:
        result["images_not_found"] = missing
    return result


def image_table(predictions: predictions_lib.Predictions, row: int) -> dict:
    """Rank and confidence of the true label and of the baseline's top label, per branch (Tables
    4.9-4.12)."""
    scores = predictions.branches[row]
    true_label = int(predictions.labels[row])
    baseline_label = int(scores[0].argmax())
    per_branch = {}
    for index, name in enumerate(predictions.branch_names):
        branch = scores[index]
        pair_ranks = ranks(np.stack([branch, branch]), np.array([true_label, baseline_label]))
        per_branch[name] = {
            "true_rank": int(pair_ranks[0]),
            "true_confidence": float(branch[true_label]),
            "baseline_top_rank": int(pair_ranks[1]),
            "baseline_top_confidence": float(branch[baseline_label]),
        }
    return {
        "true_label": predictions.class_names[true_label],
        "baseline_top_label": predictions.class_names[baseline_label],
        "topology_top_label": predictions.class_names[int(predictions.topology[row].argmax())],
        "branches": per_branch,
    }


def run(config: analysis_config.EvaluateConfig) -> dict:
    """jpeg-ladder-evaluate: scores the model on the records' split or on raw images; writes
    OUT/evaluation.*."""
    split = config.split
    if config.records_dir:
        manifest = manifest_lib.Manifest.read(config.records_dir)
        split = records_split(manifest, split)
        predictions = predictions_lib.from_records(config.model, manifest, config.baseline, split)
        index = serving_cost.source_index(manifest)
    else:
        description = export.ExportedClassifier(config.model).description
        percents = (description["validation_percent"], description.get("test_percent", 0.0))
        index = (
            images.index_directory(config.data_dir, *percents)
            if config.data_dir
            else images.index_csv(config.labels_csv, *percents)
        )
        if split == "test" and not index.split("test"):
            split = "validation"
        predictions = predictions_lib.from_images(
            config.model, index, config.baseline, None if split == "all" else split
        )
    result = evaluate(predictions, config.image_ids, split)
    if config.boxes_csv:
        result["localisation"] = localisation.localisation(
            manifest, config.boxes_csv, predictions.image_ids
        )
    if config.cost_images:
        result["cost"] = serving_cost.split_cost(config.model, index, split, config.cost_images)
    title = f"Evaluation of {config.model}"
    evaluate_render.write(result, config.out_dir, title)
    print(evaluate_render.markdown(result, title).split("\n## ")[0])
    if "ms_per_image" in result.get("cost", {}):
        cost = result["cost"]
        timings = ", ".join(
            f"{ms:.1f} at batch {size}" for size, ms in cost["ms_per_image"].items()
        )
        passes = evaluate_render.passes(cost["backbone_passes"])
        print(f"serving cost: {passes}, ms per image {timings}")
    print(f"evaluate: wrote {config.out_dir}/evaluation.json and evaluation.md")
    return result
