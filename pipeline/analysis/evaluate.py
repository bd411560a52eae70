"""Evaluation through one path: the trained topology, the baseline, each branch alone, oracle,
ensemble.

Every figure comes from two prediction arrays over the same images and labels:
  topology [N, classes]            the exported model;
  branches [N, 11, classes]        the baseline model on each branch alone (branch 0 = the
                                   baseline):
                                   the stock backbone when the classes are ImageNet's, otherwise a
                                   single-branch model trained by the same trainer (--baseline).
Both are computed either from the cached records or from the raw images, through the same models.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import registry
from pipeline import backbones
from pipeline import branches as branches_lib
from pipeline import errors
from pipeline.analysis import localisation
from pipeline.analysis import serving_cost
from pipeline.analysis import statistics
from pipeline.config import analysis as analysis_config
from pipeline.offline import images
from pipeline.offline import ladder
from pipeline.training import export
from pipeline.training import metrics
from pipeline.training import run_directory
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader


@dataclasses.dataclass
class Predictions:
    image_ids: list
    labels: np.ndarray  # [N], in the model's class space
    topology: np.ndarray  # [N, classes]
    branches: np.ndarray | None  # [N, branches, classes]; None without a baseline model
    branch_names: list
    class_names: list


class _BaselineModel:
    """The model that scores one branch at a time: the stock backbone, or a trained single-branch
    export."""

    def __init__(self, description: dict, baseline_logdir: str | None):
        self.trained = None
        self.stock = None
        if baseline_logdir:
            self.trained = export.ExportedClassifier(
                run_directory.RunDirectory(baseline_logdir).export_dir
            )
            if self.trained.description["branch_indices"] != [0]:
                raise errors.UserError(
                    f"--baseline {baseline_logdir} was trained on branches "
                    f"{self.trained.description['branches']}; train it with --branches 0"
                )
            if self.trained.class_names != description["class_names"]:
                raise errors.UserError(
                    f"--baseline {baseline_logdir} has other classes than the model"
                )
        elif description["label_space"] == "imagenet":
            self.stock = backbones.from_identity(
                description["backbone"],
                description["weights"],
                description["input_size"],
                description.get("weights_seed", 0),
            )
            self.backbone = registry.get_backbone(description["backbone"])

    @property
    def available(self) -> bool:
        return self.trained is not None or self.stock is not None

    def nodes(self, description: dict) -> list[str]:
        """The nodes it reads (several for a trained FBSD head)."""
        return self.trained.nodes if self.trained else [description["node"]]

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """[B, branches, S, S, 3] -> [B, branches, classes], each branch alone."""
        count, num_branches = pixels.shape[:2]
        flat = pixels.reshape((count * num_branches, 1) + pixels.shape[2:])
        if self.trained:
            scores = self.trained.probabilities_of_pixels(flat)
        else:
            scores = self.stock(self.backbone.preprocess(flat[:, 0]), training=False).numpy()
        return scores.reshape(count, num_branches, -1)

    def from_bottlenecks(self, bottlenecks, node: str) -> np.ndarray:
        """[B, branches, *node_shape] (or {node: them}) -> [B, branches, classes], each branch
        alone."""
        count, num_branches = tf.nest.flatten(bottlenecks)[0].shape[:2]
        flat = tf.nest.map_structure(
            lambda value: value.reshape((count * num_branches, 1) + value.shape[2:]), bottlenecks
        )
        if self.trained:
            scores = self.trained.probabilities_of_bottlenecks(flat)
        else:
            features = cut.tail(self.stock, node)(flat[:, 0], training=False)
            scores = cut.classifier_layer(self.stock)(features).numpy()
        return scores.reshape(count, num_branches, -1)


def _numpy(bottlenecks):
    """Tensors (one, or {node: tensor}) as arrays."""
    return tf.nest.map_structure(lambda value: value.numpy(), bottlenecks)


def _dataset_nodes(nodes: list[str]):
    """What reader.make_dataset takes as its node: the one, or the several."""
    return nodes[0] if len(nodes) == 1 else tuple(nodes)


class _LabelMapper(dict):
    """Dataset class name -> index in the model's classes (a missing name fails with the fix)."""

    def __init__(self, description: dict):
        super().__init__()
        self.imagenet = description["label_space"] == "imagenet"
        self.class_names = description["class_names"]
        if not self.imagenet:
            self.update((name, index) for index, name in enumerate(self.class_names))

    def __missing__(self, name: str) -> int:
        if self.imagenet:  # wnids, or integer ImageNet indices as in ILSVRC validation label files
            indices = registry.imagenet_indices([name], integers_are_indices=True)
            if indices is not None:
                self[name] = indices[0]
                return indices[0]
        raise errors.UserError(
            f"class {name!r} is not one of the model's classes "
            f"({', '.join(self.class_names[:10])}{', ...' if len(self.class_names) > 10 else ''})"
        )


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


def predictions_from_records(
    model_dir: str,
    manifest: manifest_lib.Manifest,
    baseline_logdir=None,
    split="test",
    batch_size=32,
) -> Predictions:
    """Predictions on one split of the records ("all": every split of them, one after the other)."""
    if split == "all":
        parts = [
            predictions_from_records(model_dir, manifest, baseline_logdir, name, batch_size)
            for name in manifest.splits
        ]
        return Predictions(
            [image_id for part in parts for image_id in part.image_ids],
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.topology for p in parts]),
            None if parts[0].branches is None else np.concatenate([p.branches for p in parts]),
            parts[0].branch_names,
            parts[0].class_names,
        )
    model = export.ExportedClassifier(model_dir)
    description = model.description
    baseline = _BaselineModel(description, baseline_logdir)
    mapper = _LabelMapper(description)
    label_of = np.asarray([mapper[name] for name in manifest.class_names])
    nodes = _dataset_nodes(model.nodes)
    topology, labels, image_ids = [], [], []
    with reader.explained_data_loss(manifest.directory, nodes, split):
        for bottlenecks, label, image_id in reader.make_dataset(
            manifest,
            nodes,
            split,
            batch_size,
            with_ids=True,
            branches=description["branch_indices"],
        ):
            topology.append(model.probabilities_of_bottlenecks(_numpy(bottlenecks)))
            labels.append(label_of[label.numpy()])
            image_ids.extend(image_id.numpy().astype(str))
    branches = None
    if baseline.available:
        by_id = {}
        baseline_nodes = _dataset_nodes(baseline.nodes(description))
        with reader.explained_data_loss(manifest.directory, baseline_nodes, split):
            for bottlenecks, _, image_id in reader.make_dataset(
                manifest, baseline_nodes, split, batch_size, with_ids=True
            ):
                by_id.update(
                    zip(
                        image_id.numpy().astype(str),
                        baseline.from_bottlenecks(_numpy(bottlenecks), baseline_nodes),
                    )
                )
        branches = np.stack([by_id[image_id] for image_id in image_ids])
    return Predictions(
        image_ids,
        np.concatenate(labels),
        np.concatenate(topology),
        branches,
        list(manifest.branches),
        list(description["class_names"]),
    )


def predictions_from_images(
    model_dir: str,
    index: images.ImageIndex,
    baseline_logdir=None,
    split: str | None = "test",
    batch_size: int = 8,
) -> Predictions:
    """The same figures from raw image files, decoded and laddered as the offline stage does."""
    model = export.ExportedClassifier(model_dir)
    description = model.description
    baseline = _BaselineModel(description, baseline_logdir)
    mapper = _LabelMapper(description)
    items = index.items if split is None else index.split(split)
    selected = np.asarray(description["branch_indices"])
    topology, branches, labels, image_ids = [], [], [], []
    for start in range(0, len(items), batch_size):
        batch, pixels = [], []
        for item in items[start : start + batch_size]:
            try:
                pixels.append(model.file_branch_pixels(item.path))
            except ladder.BadImage:
                continue  # the offline stage quarantined it too
            batch.append(item)
        if not batch:
            continue
        pixels = np.stack(pixels)
        topology.append(model.probabilities_of_pixels(pixels[:, selected]))
        if baseline.available:
            branches.append(baseline.from_pixels(pixels))
        labels.extend(mapper[index.class_names[item.label]] for item in batch)
        image_ids.extend(item.image_id for item in batch)
    branch_names = list(
        description.get("record_branches") or branches_lib.ladder_names(description["qualities"])
    )
    return Predictions(
        image_ids,
        np.asarray(labels),
        np.concatenate(topology),
        np.concatenate(branches) if branches else None,
        branch_names,
        list(description["class_names"]),
    )


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


def evaluate(predictions: Predictions, image_ids=(), split: str | None = None) -> dict:
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
            "backbone "
            "is a hub: or savedmodel: model without one), so pass --baseline LOGDIR of a "
            "single-branch "
            "training (train-block-by-block --branches 0)"
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


def image_table(predictions: Predictions, row: int) -> dict:
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


def markdown(result: dict, title: str) -> str:
    def percent(value):
        return f"{100 * value:.2f}"

    split = f" of the {result['split']} split" if result.get("split") else ""
    warning = (
        [f"**Warning: {result['selection_warning']}.**", ""]
        if result.get("selection_warning")
        else []
    )
    lines = [
        f"# {title}",
        "",
        f"{result['num_images']} images{split}.",
        "",
        *warning,
        "| model | top-1 % | top-5 % | top-10 % |",
        "|---|---:|---:|---:|",
    ]
    rows = [("topology", result["topology"])]
    if "baseline" in result:
        rows = (
            [("baseline (original only)", result["baseline"])]
            + rows
            + [
                ("oracle: any branch right", result["oracle"]),
                ("ensemble: mean probability", result["ensemble"]),
            ]
            + [
                (f"branch {name} alone", result["branches"][name])
                for name in sorted(result["branches"], key=branches_lib.order)
            ]
        )
    lines.extend(
        f"| {name} | {percent(scores['top1'])} | {percent(scores['top5'])} | "
        f"{percent(scores['top10'])} |"
        for name, scores in rows
    )
    if "versus_baseline" in result:
        versus = result["versus_baseline"]
        low, high = versus["top1_difference_ci95"]
        lines += [
            "",
            "## Topology versus baseline",
            "",
            f"- Type A (topology right, baseline wrong): {versus['type_a']}",
            f"- Type B (baseline right, topology wrong): {versus['type_b']}",
            f"- exact McNemar p-value: {versus['mcnemar_exact_p']:.4g}",
            f"- top-1 difference: {percent(versus['top1_difference'])} points, bootstrap 95 % "
            "interval "
            f"[{percent(low)}, {percent(high)}]",
        ]
    else:
        lines += ["", f"Note: {result['note']}"]
    if "localisation" in result:
        found = result["localisation"]
        lines += [
            "",
            "## Localisation of the object view",
            "",
            f"{found['images']} images with a ground-truth box: "
            f"{percent(found['iou_at_least_0.5'])} % of the object boxes reach IoU >= 0.5, mean "
            f"IoU {found['mean_iou']:.3f} ({found['without_ground_truth']} images without one).",
        ]
    cost = result.get("cost", {})
    if "ms_per_image" in cost:
        timings = ", ".join(
            f"{ms:.1f} ms at batch {size} ({cost['images_per_second'][size]:.1f} images/s)"
            for size, ms in cost["ms_per_image"].items()
        )
        lines += [
            "",
            "## Serving cost",
            "",
            f"{_passes(cost['backbone_passes'])} per image; through serving_default, "
            f"{timings} per image on {cost['device']}.",
        ]
    for image_id, table in result.get("images", {}).items():
        lines += [
            "",
            f"## {image_id}",
            "",
            f"True label: {table['true_label']}; baseline's top label: "
            f"{table['baseline_top_label']}; "
            f"topology's: {table['topology_top_label']}.",
            "",
            "| branch | true rank | true confidence | baseline-top rank | baseline-top confidence "
            "|",
            "|---|---:|---:|---:|---:|",
        ]
        lines.extend(
            f"| {name} | {row['true_rank']} | {row['true_confidence']:.4f} | "
            f"{row['baseline_top_rank']} | "
            f"{row['baseline_top_confidence']:.4f} |"
            for name, row in sorted(
                table["branches"].items(), key=lambda pair: branches_lib.order(pair[0])
            )
        )
    return "\n".join(lines) + "\n"


def _passes(count: int) -> str:
    return f"{count} backbone pass{'' if count == 1 else 'es'}"


def write(result: dict, out_dir: str, title: str = "Evaluation") -> None:
    os.makedirs(out_dir, exist_ok=True)
    fileio.write_json_atomic(os.path.join(out_dir, "evaluation.json"), result)
    fileio.write_text_atomic(os.path.join(out_dir, "evaluation.md"), markdown(result, title))


def run(config: analysis_config.EvaluateConfig) -> dict:
    """jpeg-ladder-evaluate: scores the model on the records' split or on raw images; writes
    OUT/evaluation.*."""
    split = config.split
    if config.records_dir:
        manifest = manifest_lib.Manifest.read(config.records_dir)
        split = records_split(manifest, split)
        predictions = predictions_from_records(config.model, manifest, config.baseline, split)
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
        predictions = predictions_from_images(
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
    write(result, config.out_dir, title)
    print(markdown(result, title).split("\n## ")[0])
    if "ms_per_image" in result.get("cost", {}):
        cost = result["cost"]
        timings = ", ".join(
            f"{ms:.1f} at batch {size}" for size, ms in cost["ms_per_image"].items()
        )
        print(f"serving cost: {_passes(cost['backbone_passes'])}, ms per image {timings}")
    print(f"evaluate: wrote {config.out_dir}/evaluation.json and evaluation.md")
    return result
