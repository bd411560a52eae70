"""Evaluation: one path from records or raw images, the statistics, and the per-image tables."""

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from pipeline.analysis import evaluate
from pipeline.analysis import evaluate_render
from pipeline.analysis import predictions as predictions_lib
from pipeline.offline import images
from pipeline.training import metrics
from pipeline.training import train
from tests import conftest
from tests.test_train import STAGES
from tests.test_train import _config
from tfrecords import manifest as manifest_lib


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    topology = _config(records, root / "topology", stages=STAGES[:1], max_epochs_per_stage=2.0)
    baseline = dataclasses.replace(topology, logdir=str(root / "baseline"), branches=(0,))
    train.train_and_evaluate(topology)
    train.train_and_evaluate(baseline)
    return topology.logdir, baseline.logdir


def test_records_and_raw_images_give_the_same_numbers(records, trained, tmp_path):
    topology_dir, baseline_dir = trained
    model = os.path.join(topology_dir, "export")
    from_records = predictions_lib.from_records(
        model, manifest_lib.Manifest.read(records), baseline_dir
    )
    manifest = json.load(open(os.path.join(records, "manifest.json")))
    index = images.index_directory(
        manifest["config"]["data_dir"],
        manifest["config"]["validation_percent"],
        manifest["config"]["test_percent"],
    )
    from_images = predictions_lib.from_images(model, index, baseline_dir)
    order = [from_images.image_ids.index(image_id) for image_id in from_records.image_ids]
    assert sorted(from_records.image_ids) == sorted(from_images.image_ids)
    np.testing.assert_array_equal(from_records.labels, from_images.labels[order])
    np.testing.assert_allclose(
        from_records.topology, from_images.topology[order], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        from_records.branches, from_images.branches[order], rtol=1e-4, atol=1e-6
    )
    image_id = from_records.image_ids[0]
    result_records = evaluate.evaluate(from_records, [image_id])
    result_images = evaluate.evaluate(from_images, [image_id])
    # The same figures up to float rounding: the CNN sees the images in other batches on the two
    # paths.
    conftest.assert_nested_close(result_records, result_images)
    assert set(result_records["branches"]) == {"original"} | {f"q{q}" for q in range(10, 101, 10)}
    assert result_records["oracle"]["top1"] >= max(
        scores["top1"] for scores in result_records["branches"].values()
    )
    table = result_records["images"][image_id]["branches"]
    row = from_records.image_ids.index(image_id)
    original = from_records.branches[row, 0]
    label = from_records.labels[row]
    assert len(table) == 11
    assert table["original"]["true_rank"] == 1 + int(np.sum(original > original[label])) + int(
        np.sum(original[:label] == original[label])
    )
    assert table["original"]["true_confidence"] == pytest.approx(float(original[label]))
    evaluate_render.write(result_records, str(tmp_path / "out"))
    text = (tmp_path / "out" / "evaluation.md").read_text()
    assert "exact McNemar" in text and image_id in text
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["num_images"] == len(
        order
    )


def test_without_a_baseline_only_the_topology_is_scored(records, trained):
    predictions = predictions_lib.from_records(
        os.path.join(trained[0], "export"), manifest_lib.Manifest.read(records)
    )
    result = evaluate.evaluate(predictions)
    assert predictions.branches is None and "--baseline" in result["note"] and "topology" in result


def test_compare_counts_type_a_and_b_with_an_exact_test_and_an_interval():
    rng = np.random.default_rng(0)
    baseline = rng.random(400) < 0.7
    topology = baseline.copy()
    topology[np.flatnonzero(~baseline)[:30]] = True  # 30 images won
    topology[np.flatnonzero(baseline)[:10]] = False  # 10 lost
    result = evaluate.compare(topology, baseline)
    assert (result["type_a"], result["type_b"]) == (30, 10)
    # Exact two-sided binomial tail, written out: 2 * P(X >= 30), X ~ Binomial(40, 1/2).
    expected = 2 * sum(math.comb(40, k) for k in range(30, 41)) / 2**40
    assert result["mcnemar_exact_p"] == pytest.approx(expected, rel=1e-9)
    assert result["top1_difference"] == pytest.approx(20 / 400)
    low, high = result["top1_difference_ci95"]
    assert low < 20 / 400 < high and low > 0


def test_ranks_and_top_k():
    # Twelve classes, so that top-5 and top-10 are not trivially 1.
    scores = np.zeros((3, 12))
    scores[0, :7] = [0.1, 0.6, 0.3, 0.5, 0.4, 0.45, 0.35]  # label 0 ranks 7th
    scores[1, 1] = 1.0  # label 1 ranks 1st
    scores[2] = np.linspace(1, 0, 12)  # label 11 ranks 12th
    labels = np.array([0, 1, 11])
    assert evaluate.ranks(scores, labels).tolist() == [7, 1, 12]
    assert metrics.top_k_accuracy(scores, labels) == {
        "top1": pytest.approx(1 / 3),
        "top5": pytest.approx(1 / 3),
        "top10": pytest.approx(2 / 3),
    }
    # A tie goes to the lower class index, as argmax does: a uniform guess is not "right" for
    # everyone.
    uniform = np.full((2, 3), 1 / 3)
    assert evaluate.ranks(uniform, np.array([0, 2])).tolist() == [1, 3]
