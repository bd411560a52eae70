"""Pruning by distinctiveness: angles and selections on hand-made activations, exact merges, FLOPs,
the loop's stop at the inflection, and the command on a run folder with an MLP head."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.analysis import distinctiveness
from pipeline.config import analysis as analysis_config
from pipeline.config import training as training_config
from pipeline.training import heads
from pipeline.training import results as results_lib
from pipeline.training import run_directory
from tfrecords import manifest as manifest_lib
from tools import prune as prune_tool

Removal = distinctiveness.Removal


def _orthonormal_zero_mean(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(size=(rows, columns))
    return np.linalg.qr(matrix - matrix.mean(axis=0))[0]  # columns stay in the mean-zero subspace


def _hand_made(extra_at_12_degrees: bool = False) -> np.ndarray:
    """Neurons 0-1 at 10 degrees, 2-3 at 170, 4-5 at 90, every other pair at 90; offsets do not
    matter."""
    basis = _orthonormal_zero_mean(40, 7)
    ten, seventy = np.radians(10), np.radians(170)
    neurons = [
        basis[:, 0],
        np.cos(ten) * basis[:, 0] + np.sin(ten) * basis[:, 1],
        basis[:, 2],
        np.cos(seventy) * basis[:, 2] + np.sin(seventy) * basis[:, 3],
        basis[:, 4],
        basis[:, 5],
    ]
    if extra_at_12_degrees:
        neurons.append(np.cos(np.radians(12)) * basis[:, 0] + np.sin(np.radians(12)) * basis[:, 6])
    return np.stack(neurons, axis=1) + np.arange(len(neurons)) * 3.0


def test_angles_of_hand_made_activations():
    angles = distinctiveness.angles(_hand_made())
    assert angles[0, 1] == pytest.approx(10, abs=1e-6)
    assert angles[2, 3] == pytest.approx(170, abs=1e-6)
    assert angles[4, 5] == pytest.approx(90, abs=1e-6)
    assert angles[0, 2] == pytest.approx(90, abs=1e-6) and np.isnan(angles[1, 1])


@pytest.mark.parametrize(
    "method, complementary, expected",
    [
        (
            "threshold",
            "both",
            [Removal((1,), 0, "similar"), Removal((2, 3), None, "complementary")],
        ),
        ("threshold", "one", [Removal((1,), 0, "similar"), Removal((3,), 2, "complementary")]),
        ("most-similar", "both", [Removal((1,), 0, "similar")]),
        (
            "similar-complementary",
            "both",
            [Removal((1,), 0, "similar"), Removal((2, 3), None, "complementary")],
        ),
    ],
)
def test_each_method_selects_exactly_the_expected_pairs(method, complementary, expected):
    assert (
        distinctiveness.select(
            distinctiveness.angles(_hand_made()), method, complementary=complementary
        )
        == expected
    )


def test_batch_removes_two_of_the_three_most_similar_into_the_survivor():
    angles = distinctiveness.angles(_hand_made(extra_at_12_degrees=True))
    assert distinctiveness.select(angles, "batch") == [Removal((1, 6), 0, "similar")]
    # The threshold method still takes one pair only: 1-6 is just over 15 degrees and 0 is taken.
    assert distinctiveness.select(angles, "threshold")[0] == Removal((1,), 0, "similar")


def test_threshold_finds_nothing_between_the_bounds():
    basis = _orthonormal_zero_mean(20, 3)
    assert distinctiveness.select(distinctiveness.angles(basis), "threshold") == []


def _head(activation: str, seed: int = 0):
    return heads.from_description(heads.description("mlp", 5, activation), 3, 6, seed=seed)


def _merged_outputs(head, removals, mode, features):
    weights = heads.get_mlp_weights(head)
    activations = heads.hidden_activations(head, features)
    merged, keep = distinctiveness.merge(weights, activations, removals, mode)
    assert merged.hidden_units == weights.hidden_units - sum(
        len(removal.removed) for removal in removals
    )
    return np.asarray(
        heads.mlp_from_weights(merged, activation=heads.activation_name(head))(features)
    )


@pytest.mark.parametrize("mode", ["add", "scaled"])
def test_merging_identical_neurons_leaves_outputs_unchanged(mode):
    head = _head("relu")
    weights = heads.get_mlp_weights(head)
    weights.hidden_kernel[:, 4] = weights.hidden_kernel[:, 1]
    weights.hidden_bias[4] = weights.hidden_bias[1] = 0.3
    heads.set_mlp_weights(head, weights)
    features = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    merged = _merged_outputs(head, [Removal((4,), 1, "similar")], mode, features)
    np.testing.assert_allclose(merged, np.asarray(head(features)), atol=1e-5)


def test_scaled_merge_is_exact_for_proportional_neurons_and_add_is_not():
    head = _head("relu")
    weights = heads.get_mlp_weights(head)
    weights.hidden_kernel[:, 4] = 2.5 * weights.hidden_kernel[:, 1]
    weights.hidden_bias[4], weights.hidden_bias[1] = 0.75, 0.3
    heads.set_mlp_weights(head, weights)
    features = np.random.default_rng(1).normal(size=(50, 6)).astype(np.float32)
    expected = np.asarray(head(features))
    np.testing.assert_allclose(
        _merged_outputs(head, [Removal((4,), 1, "similar")], "scaled", features),
        expected,
        atol=1e-5,
    )
    assert (
        np.abs(
            _merged_outputs(head, [Removal((4,), 1, "similar")], "add", features) - expected
        ).max()
        > 1e-3
    )


def test_complementary_pair_removed_together_with_its_constant_in_the_bias():
    head = _head("sigmoid")
    weights = heads.get_mlp_weights(head)
    # sigmoid(z) + sigmoid(-z) = 1: the pair's activations sum to a constant.
    weights.hidden_kernel[:, 3] = -weights.hidden_kernel[:, 2]
    weights.hidden_bias[3] = -weights.hidden_bias[2]
    weights.output_kernel[3] = weights.output_kernel[2]
    heads.set_mlp_weights(head, weights)
    features = np.random.default_rng(2).normal(size=(50, 6)).astype(np.float32)
    angles = distinctiveness.angles(heads.hidden_activations(head, features))
    assert angles[2, 3] == pytest.approx(180, abs=1e-3)
    removals = [
        removal
        for removal in distinctiveness.select(angles, "threshold")
        if removal.kind == "complementary"
    ]
    assert removals == [Removal((2, 3), None, "complementary")]
    np.testing.assert_allclose(
        _merged_outputs(head, removals, "add", features), np.asarray(head(features)), atol=1e-5
    )


def test_flops_follow_the_papers_count():
    assert distinctiveness.flops(2048, 1, 11)["flops"] == 2061
    assert distinctiveness.flops(2048, 500, 11)["flops"] == 1030500
    assert (
        distinctiveness.flops(2048, 500, 11)["flops"]
        - distinctiveness.flops(2048, 500 - 224, 11)["flops"]
        == 461664
    )
    assert distinctiveness.flops(2048, 500, 11)["multiply_adds"] == 500 * (2048 + 11)


def test_loop_stops_at_the_inflection_of_a_constructed_curve():
    curve = [0.90, 0.90, 0.895, 0.89, 0.86, 0.5, 0.4]
    asked = []

    def next_cycle(cycle):
        asked.append(cycle)
        return {"validation_top1": curve[cycle]}

    cycles, inflection = distinctiveness.run_cycles(
        {"validation_top1": curve[0]}, next_cycle, tolerance=0.02
    )
    assert inflection == 3 and asked == [1, 2, 3, 4] and len(cycles) == 5
    assert (
        distinctiveness.inflection([0.9, 0.9, 0.85, 0.9, 0.86, 0.85, 0.8], 0.02, patience=2) == 3
    )  # one dip ignored
    assert (
        distinctiveness.inflection([0.9, 0.9, 0.9, 0.3], 0.02, patience=2) is None
    )  # may still recover
    assert (
        distinctiveness.inflection([0.9, 0.9, 0.9, 0.3], 0.02, patience=2, complete=True) == 2
    )  # the curve ended
    flat, end = distinctiveness.run_cycles(
        {"validation_top1": 0.9},
        lambda cycle: {"validation_top1": 0.9} if cycle < 4 else None,
        tolerance=0.02,
    )
    assert end == 3 and len(flat) == 4


def test_inflection_is_measured_against_the_best_reached_so_far():
    # A head that fine-tuning keeps improving for three cycles, then loses accuracy for good:
    # against its weaker start the drop would only count once it fell below 0.58, much later.
    curve = [0.60, 0.70, 0.80, 0.85, 0.84, 0.80, 0.78, 0.75, 0.70, 0.65, 0.62, 0.57, 0.5]
    asked = []

    def next_cycle(cycle):
        asked.append(cycle)
        return {"validation_top1": curve[cycle]} if cycle < len(curve) else None

    cycles, found = distinctiveness.run_cycles(
        {"validation_top1": curve[0]}, next_cycle, tolerance=0.02
    )
    assert found == 4 and asked == [1, 2, 3, 4, 5] and len(cycles) == 6
    _, from_start = distinctiveness.run_cycles(
        {"validation_top1": curve[0]},
        lambda cycle: next_cycle(cycle),
        tolerance=0.02,
        reference="start",
    )
    assert from_start == 10  # the thesis rule: 0.57 is the first more than 2 points below 0.60
    with pytest.raises(ValueError, match="reference"):
        distinctiveness.inflection(curve, 0.02, reference="cycle0")


def _write_run(logdir, records, kind="mlp"):
    """A run folder as the trainer writes it: results.json and the first stage's checkpoint of the
    head."""
    head = heads.from_description(heads.description(kind, 8, "relu", 0.2), 3, 2048, seed=0)
    path = tf.train.Checkpoint(head=head).write(
        os.path.join(logdir, "checkpoints", "stage0", "best", "ckpt")
    )
    stage = results_lib.StageResult(
        stage=0,
        node="pool",
        thesis_block="fully connected layer",
        learning_rate=0.01,
        steps=1,
        best_top1=0.0,
        best_top5=0.0,
        checkpoint=path,
        seconds=0.0,
        ended_by="plateau",
    )
    run_directory.RunDirectory(logdir).write_results(
        results_lib.Results(
            records=records,
            backbone="resnet50_v2",
            branches=("original",),
            branch_indices=(0,),
            fusion="concat",
            optimizer="sgd",
            head=heads.description(kind, 8, "relu", 0.2),
            label_space="dataset",
            global_batch_size=4,
            replicas=1,
            workers=1,
            stages=(stage,),
        )
    )


def test_prune_command_on_a_run_with_an_mlp_head(records, tmp_path, capsys):
    _write_run(str(tmp_path), records)
    out = tmp_path / "out"
    assert (
        prune_tool.main(
            [
                "--logdir",
                str(tmp_path),
                "--out-dir",
                str(out),
                "--method",
                "batch",
                "--max-cycles",
                "2",
                "--max-epochs",
                "2",
                "--patience",
                "1",
                "--batch-size",
                "8",
                "--past-inflection",
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "pruning.json").read_text())
    assert sorted(result) == [
        "cycles",
        "inflection_cycle",
        "inflection_reference",
        "input_size",
        "method",
        "num_classes",
        "peak_memory_mib",
        "recipe",
    ]
    assert (result["recipe"], result["inflection_reference"]) == ("converged", "best")
    assert all(cycle["memory_mib"] > 0 for cycle in result["cycles"])
    assert (result["method"], result["input_size"], result["num_classes"]) == ("batch", 2048, 3)
    assert [cycle["neurons"] for cycle in result["cycles"]][0] == 8
    assert (
        all(cycle["neurons"] < 8 for cycle in result["cycles"][1:]) and len(result["cycles"]) == 3
    )
    assert result["cycles"][0]["flops"] == 8 * (2048 + 3 + 2)
    has_test = manifest_lib.Manifest.read(records).num_records("test") > 0
    assert result["cycles"][0]["test_split"] == ("test" if has_test else "validation")
    assert ("no test split" in (out / "pruning.md").read_text()) != has_test
    assert (out / "pruning.png").stat().st_size > 0 and os.listdir(out / "tensorboard" / "batch")


def test_prune_command_refuses_a_linear_head_in_one_line(records, tmp_path, capsys):
    _write_run(str(tmp_path), records, kind="linear")
    assert (
        prune_tool.main(
            ["--logdir", str(tmp_path), "--out-dir", str(tmp_path / "out"), "--no-progress"]
        )
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert "--head mlp" in error and len(error.splitlines()) == 1


def test_config_rejects_a_bad_method():
    with pytest.raises(ValueError, match="--method"):
        analysis_config.PruneConfig(out_dir="out", logdir="run", method="random")


@pytest.mark.slow
def test_prune_command_on_a_head_the_trainer_trained(records, tmp_path):
    import dataclasses

    from pipeline.training import train

    logdir = str(tmp_path / "run")
    config = dataclasses.replace(
        training_config.tiny_training(records, logdir),
        stages=("pool",),
        head="mlp",
        hidden_units=6,
        fusion="shared",
        export=False,
    )
    train.train_and_evaluate(config)
    out = tmp_path / "out"
    assert (
        prune_tool.main(
            [
                "--logdir",
                logdir,
                "--out-dir",
                str(out),
                "--method",
                "most-similar",
                "--max-cycles",
                "1",
                "--max-epochs",
                "1",
                "--batch-size",
                "8",
                "--past-inflection",
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "pruning.json").read_text())
    # Shared fusion: the head sees one branch's 2048 features at a time.
    assert result["input_size"] == 2048 and result["cycles"][0]["neurons"] == 6
    pruned = result["cycles"][1]
    assert pruned["removed"]["similar"] == 1 and pruned["neurons"] == 6 - sum(
        pruned["removed"].values()
    )
