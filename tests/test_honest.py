"""The honest verdict: fusions, the training rule (plateau, sweep, seeds), a test split training
never reads, and jpeg-ladder-compare's figures."""

import dataclasses
import glob
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import interrupt
from pipeline.analysis import compare
from pipeline.analysis import evaluate
from pipeline.analysis import predictions as predictions_lib
from pipeline.analysis import report
from pipeline.analysis import statistics
from pipeline.config import analysis as analysis_config
from pipeline.config import training as training_config
from pipeline.training import export
from pipeline.training import fusion
from pipeline.training import plateau
from pipeline.training import results as results_lib
from pipeline.training import solved
from pipeline.training import topology
from pipeline.training import train
from tests import conftest
from tfrecords import manifest as manifest_lib


def _config(records, logdir, **changes):
    base = dataclasses.replace(
        training_config.tiny_training(records, str(logdir)),
        stages=("pool",),
        max_epochs_per_stage=2.0,
        plateau_epochs=100.0,
        export=False,
    )
    return dataclasses.replace(base, **changes)


def _model(fusion_name, num_branches, head, combiner=None):
    features = keras.Input(shape=(num_branches, 6))
    return keras.Model(
        features, fusion.outputs(fusion_name, features, head, combiner, num_branches)
    )


def test_shared_with_one_branch_is_the_single_branch_linear_head():
    head = keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(seed=3))
    features = np.random.default_rng(0).normal(size=(5, 1, 6)).astype(np.float32)
    labels = tf.constant([0, 1, 2, 3, 0])
    shared, single = _model("shared", 1, head)(features), _model("concat", 1, head)(features)
    np.testing.assert_allclose(
        tf.nn.softmax(shared["logits"]), tf.nn.softmax(single["logits"]), atol=1e-6
    )
    np.testing.assert_allclose(
        fusion.per_example_loss("shared", shared, labels),
        fusion.per_example_loss("concat", single, labels),
        rtol=1e-5,
    )


def test_weighted_with_equal_weights_predicts_and_trains_the_head_as_shared():
    head = keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(seed=3))
    features = tf.constant(np.random.default_rng(1).normal(size=(5, 3, 6)).astype(np.float32))
    labels = tf.constant([0, 1, 2, 3, 0])
    weighted_model = _model("weighted", 3, head, fusion.combiner("weighted", 3))
    shared_model = _model("shared", 3, head)
    gradients = {}
    for name, model in (("weighted", weighted_model), ("shared", shared_model)):
        with tf.GradientTape() as tape:
            outputs = model(features)
            loss = tf.reduce_mean(fusion.per_example_loss(name, outputs, labels))
        gradients[name] = tape.gradient(loss, head.kernel)
        gradients[name + "_logits"] = outputs["logits"]
    np.testing.assert_allclose(gradients["weighted_logits"], gradients["shared_logits"], atol=1e-6)
    np.testing.assert_allclose(gradients["weighted"], gradients["shared"], atol=1e-6)
    assert float(tf.reduce_max(tf.abs(gradients["shared"]))) > 0


@pytest.mark.slow
@pytest.mark.parametrize("fusion_name", ["shared", "weighted", "gated"])
def test_each_fusion_exports_what_the_trainer_computes(records, tmp_path, fusion_name):
    config = _config(
        records, tmp_path / fusion_name, fusion=fusion_name, max_epochs_per_stage=1.0, export=True
    )
    results = train.train_and_evaluate(config)
    assert results.fusion == fusion_name
    setup = train.prepare(config)
    cached = conftest.predict_records(
        setup, setup.config.schedule[-1], results.stages[-1].checkpoint
    )
    classifier = export.ExportedClassifier(str(tmp_path / fusion_name / "export"))
    assert classifier.description["fusion"] == fusion_name
    for bottlenecks, _, image_ids in conftest.records_dataset(
        records, "pool", "validation", 8, with_ids=True
    ):
        exported = classifier.probabilities_of_bottlenecks(bottlenecks.numpy())
        expected = np.stack([cached[image_id] for image_id in image_ids.numpy().astype(str)])
        np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(exported.sum(axis=1), 1.0, atol=1e-5)


def test_a_stage_ends_on_its_plateau_and_a_capped_stage_is_flagged(records, tmp_path):
    # A learning rate too small to move anything: validation never improves after step 0.
    still = train.train_and_evaluate(
        _config(
            records,
            tmp_path / "still",
            learning_rate=1e-12,
            plateau_epochs=1.0,
            max_epochs_per_stage=50.0,
        )
    )
    steps_per_epoch = -(-conftest.num_records(records, "train") // 4)
    assert still.stages[0].ended_by == "plateau"
    assert still.stages[0].steps < 50 * steps_per_epoch
    capped = train.train_and_evaluate(
        _config(records, tmp_path / "capped", max_epochs_per_stage=1.0)
    )
    assert capped.stages[0].ended_by == "max_epochs" and capped.stages[0].capped
    assert results_lib.CAP_WARNING in capped.summary()
    assert results_lib.CAP_WARNING not in still.summary()
    for name, flagged in (("capped", True), ("still", False)):
        report.build_report(str(tmp_path / name), None, str(tmp_path / f"report_{name}"))
        text = (tmp_path / f"report_{name}" / "report.md").read_text()
        assert ("WARNING: pool hit the epoch cap while still improving" in text) == flagged
        assert ("| **epoch cap while still improving" in text) == flagged and (
            "| plateau |" in text
        ) != flagged


@pytest.mark.slow
def test_the_sweep_keeps_the_learning_rate_best_on_validation(records, tmp_path):
    results = train.train_and_evaluate(
        _config(
            records,
            tmp_path / "run",
            optimizer="adam",
            learning_rate="auto",
            sweep_learning_rates=(1e-12, 0.01),
            sweep_epochs=3.0,
        )
    )
    sweep = results.learning_rate_sweep
    by_rate = {row.learning_rate: row for row in sweep.candidates}
    # 1e-12 cannot move the head; 0.01 learns, so it has the better validation (accuracy, then
    # loss).
    assert (by_rate[0.01].validation_top1, -by_rate[0.01].validation_loss) > (
        by_rate[1e-12].validation_top1,
        -by_rate[1e-12].validation_loss,
    )
    assert sweep.chosen == 0.01 == results.stages[0].learning_rate
    assert os.path.isdir(tmp_path / "run" / "sweep" / "lr0.01")


def test_training_never_reads_the_test_split(records, tmp_path):
    clean = train.train_and_evaluate(_config(records, tmp_path / "clean"))
    poisoned = str(tmp_path / "poisoned")
    os.symlink(records, poisoned + "-source")
    for path in glob.glob(os.path.join(records, "**"), recursive=True):
        target = os.path.join(poisoned, os.path.relpath(path, records))
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        elif "/test-" in target:  # garbage where the test records were: any read would fail
            with open(target, "wb") as file:
                file.write(b"not a record" * 100)
        else:
            os.symlink(path, target)
    assert conftest.num_records(poisoned, "test") > 0
    dirty = train.train_and_evaluate(_config(poisoned, tmp_path / "dirty"))
    for got, expected in zip(dirty.stages, clean.stages, strict=True):
        assert (got.steps, got.best_step, got.best_top1, got.best_loss) == (
            expected.steps,
            expected.best_step,
            expected.best_top1,
            expected.best_loss,
        )


def test_seeds_are_independent_runs_reported_as_mean_and_sd(records, tmp_path):
    results = train.train_and_evaluate(
        _config(records, tmp_path / "run", seeds=2, max_epochs_per_stage=1.0)
    )
    per_seed = [
        train.fileio.read_json(str(tmp_path / "run" / f"seed{k}" / "results.json")) for k in (0, 1)
    ]
    top1 = [run["stages"][0]["best_top1"] for run in per_seed]
    assert [run["seed"] for run in per_seed] == [0, 1] == list(results.seeds)
    assert results.stages[0].best_top1 == pytest.approx(np.mean(top1))
    assert results.stages[0].std["best_top1"] == pytest.approx(np.std(top1, ddof=1))
    assert train.fileio.read_json(str(tmp_path / "run" / "results.json")) == results.to_json()
    assert results.to_json()["stages"][0]["best_top1_std"] == results.stages[0].std["best_top1"]


def test_compare_end_to_end_writes_self_consistent_figures(records, tmp_path):
    """Two tiny arms, solved: the baseline and shared, scored on test from the records in memory;
    the figures agree with jpeg-ladder-evaluate on each export, and a rerun trains nothing."""
    rule = dataclasses.replace(analysis_config.compare_training(), progress=False)
    config = analysis_config.CompareConfig(
        records_dir=records,
        out_dir=str(tmp_path / "out"),
        fusions=("shared",),
        training=rule,
        cost_images=2,
    )
    result = compare.compare(config)
    assert result["recipe"] == "converged" and result["solver"] == solved.METHOD
    # Accuracy beside cost: the baseline reads the original (one backbone pass), shared every
    # branch (eleven), each timed through its export's serving_default.
    assert result["arms"]["baseline"]["cost"]["backbone_passes"] == 1
    assert result["arms"]["shared"]["cost"]["backbone_passes"] == 11
    assert set(result["arms"]["shared"]["cost"]["ms_per_image"]) == {"1", "32"}
    assert result == train.fileio.read_json(str(tmp_path / "out" / "comparison.json"))
    assert result["split"] == "test" and result["num_images"] == conftest.num_records(
        records, "test"
    )
    assert set(result["arms"]) == {"baseline", "shared"} and set(result["versus_baseline"]) == {
        "shared"
    }
    manifest = manifest_lib.Manifest.read(records)
    for arm, entry in result["arms"].items():
        # A solved arm is deterministic: one run stands for every seed.
        assert len(entry["top1"]) == 1 and entry["ended_by"] == [["solved"]]
        assert entry["learning_rate"] is None and len(entry["solver"]["l2"]) == 1
        logdir = tmp_path / "out" / "runs" / arm / "seed0"
        assert not os.path.exists(tmp_path / "out" / "runs" / arm / "seed1")
        # Scored from memory, the numbers are jpeg-ladder-evaluate's on the arm's export.
        baseline_logdir = str(logdir) if arm == "baseline" else None
        evaluated = evaluate.evaluate(
            predictions_lib.from_records(str(logdir / "export"), manifest, baseline_logdir, "test")
        )
        assert entry["top1"][0] == pytest.approx(evaluated["topology"]["top1"], abs=1e-12)
        assert entry["top5"][0] == pytest.approx(evaluated["topology"]["top5"], abs=1e-12)
        if arm == "baseline":
            assert result["oracle_top1"] == pytest.approx(evaluated["oracle"]["top1"], abs=1e-12)
    for arm, versus in result["versus_baseline"].items():
        expected = result["arms"][arm]["top1_mean"] - result["arms"]["baseline"]["top1_mean"]
        assert versus["difference_mean"] == pytest.approx(expected)
        assert versus["ci95"][0] <= versus["difference_mean"] <= versus["ci95"][1]
    text = (tmp_path / "out" / "comparison.md").read_text()
    assert "**converged** recipe" in text and "solved, L2" in text
    assert "## Accuracy and serving cost" in text
    assert os.path.isfile(tmp_path / "out" / "comparison.png")
    # A rerun resumes: every run is finished, so nothing trains again and the figures are the same.
    assert compare.compare(config) == result


@pytest.mark.slow
def test_compare_by_sgd_trains_every_seed_by_one_rule_and_scores_its_refit(records, tmp_path):
    rule = dataclasses.replace(
        analysis_config.compare_training(),
        solver="sgd",
        refit=True,
        seeds=2,
        sweep_learning_rates=(0.01,),
        sweep_epochs=1.0,
        batch_size=4,
        eval_every_steps=2,
        plateau_epochs=2.0,
        max_epochs_per_stage=2.0,
        export=False,
        progress=False,
    )
    config = analysis_config.CompareConfig(
        records_dir=records, out_dir=str(tmp_path / "out"), fusions=("shared",), training=rule
    )
    result = compare.compare(config)
    for arm, entry in result["arms"].items():
        assert len(entry["top1"]) == 2 and entry["top1_mean"] == pytest.approx(
            np.mean(entry["top1"])
        )
        assert entry["learning_rate"] == 0.01 and entry["solver"] is None
        assert os.path.isfile(tmp_path / "out" / "runs" / arm / "seed1" / "results.json")
        # The sweep's candidates write no TensorBoard runs of their own, only the sweep's summary.
        sweep = tmp_path / "out" / "runs" / arm / "sweep"
        assert not os.path.exists(sweep / "lr0.01" / "stage0_pool")
        assert any(name.startswith("events.out") for name in os.listdir(sweep))
        # --refit: each run trained again on train + validation, scored on the same images.
        refit_run = tmp_path / "out" / "runs" / arm / "seed0" / "refit" / "results.json"
        assert [stage["ended_by"] for stage in json.loads(refit_run.read_text())["stages"]] == [
            "replay"
        ]
    assert set(result["refit"]["arms"]) == {"baseline", "shared"}
    assert "## Refit" in (tmp_path / "out" / "comparison.md").read_text()
    assert result["oracle_top1"] >= result["arms"]["baseline"]["top1_mean"] - 1e-12


def test_the_bootstrap_interval_covers_a_known_difference_and_the_sign_test_is_mcnemars():
    rng = np.random.default_rng(0)
    baseline = rng.random(2000) < 0.6
    arm = baseline.copy()
    arm[np.flatnonzero(~baseline)[:300]] = True  # 300 won
    arm[np.flatnonzero(baseline)[:100]] = False  # 100 lost: a true difference of 200 / 2000 = 0.1
    differences = arm.astype(float) - baseline.astype(float)
    low, high = statistics.bootstrap_interval(differences, resamples=2000)
    assert low < 0.1 < high and low > 0.07 and high < 0.13
    sign = statistics.paired_sign_test(differences[None])
    assert (sign["wins"], sign["losses"]) == (300, 100)
    # Exact two-sided binomial tail, written out: 2 * P(X >= 300), X ~ Binomial(400, 1/2).
    expected = 2 * sum(math.comb(400, k) for k in range(300, 401)) / 2**400
    assert sign["p_value"] == pytest.approx(expected, rel=1e-6)
    # Seeds that agree give the same interval as one seed; memory does not grow with the resamples.
    assert statistics.bootstrap_interval(np.stack([differences, differences]), resamples=2000) == [
        low,
        high,
    ]
    low, high = statistics.bootstrap_interval_seeds(arm[None], baseline[None], resamples=2000)
    assert low < 0.1 < high and low > 0.07 and high < 0.13


def test_the_seed_aware_interval_does_not_take_one_bad_baseline_seed_for_an_effect():
    rng = np.random.default_rng(1)
    good = [rng.random(2000) < 0.9 for _ in range(5)]
    arm = np.stack(good[:3])
    baseline = np.stack([good[3], good[4], rng.random(2000) < 0.6])  # one seed went badly
    differences = arm.astype(float) - baseline.astype(float)
    assert differences.mean() == pytest.approx(0.1, abs=0.02)
    images_only = statistics.bootstrap_interval(differences, resamples=2000)
    assert images_only[0] > 0.07  # over images alone the bad seed looks like a sure gain
    low, high = statistics.bootstrap_interval_seeds(arm, baseline, resamples=2000)
    # Resampling the seeds: in 8 of 27 draws the bad seed is left out and the difference is about 0.
    assert low < 0.01 and high > 0.15
    assert (
        statistics.bootstrap_interval_seeds(arm, arm, resamples=2000)[0]
        < 0
        < statistics.bootstrap_interval_seeds(arm, arm, resamples=2000)[1]
    )


def test_head_init_baseline_fails_clearly_for_an_mlp_head():
    head = keras.layers.Dense(3)
    with pytest.raises(ValueError, match="--head-init baseline"):
        topology.init_head_from_classifier(keras.Sequential([head]), None, [0, 1, 2], 0, 1)


def test_a_top1_tie_improves_only_at_a_clearly_lower_loss():
    assert plateau.improves({"top1": 0.5, "loss": 9.0}, -1.0, 0.0)  # the first evaluation
    assert plateau.improves({"top1": 0.6, "loss": 9.0}, 0.5, 1.0)
    assert not plateau.improves({"top1": 0.4, "loss": 0.1}, 0.5, 1.0)
    assert plateau.improves({"top1": 0.5, "loss": 0.9}, 0.5, 1.0)
    assert not plateau.improves(
        {"top1": 0.5, "loss": 1.0 - 1e-6}, 0.5, 1.0
    )  # float noise is no improvement


class _Requested:
    """A stop request already made (a SIGINT during the previous unit of work)."""

    requested = True
    signal_name = "SIGINT"
    signal_number = 2


def test_a_stop_requested_before_a_solved_stage_stops_the_run_there_and_a_rerun_resumes(
    records, tmp_path
):
    """A solved stage never looks at the stop request: the run checks it between stages."""
    config = _config(records, tmp_path / "run", recipe="converged")
    with pytest.raises(interrupt.Interrupted, match="stopped on SIGINT before"):
        train.train_and_evaluate(config, _Requested())
    results = train.train_and_evaluate(config)
    assert [stage.ended_by for stage in results.stages] == ["solved"]


def test_a_stop_requested_during_compare_stops_before_the_next_arm(records, tmp_path):
    rule = dataclasses.replace(analysis_config.compare_training(), progress=False)
    config = analysis_config.CompareConfig(
        records_dir=records, out_dir=str(tmp_path / "out"), fusions=("shared",), training=rule
    )
    with pytest.raises(interrupt.Interrupted, match="stopped on SIGINT before baseline seed 0"):
        compare.compare(config, _Requested())
    assert not os.path.exists(os.path.join(config.out_dir, "comparison.json"))


def test_when_only_some_arms_fit_the_solver_every_arm_trains_by_sgd(records, tmp_path):
    manifest = manifest_lib.Manifest.read(records)
    one, eleven = (solved.memory_needed(manifest, "pool", count) for count in (1, 11))
    rule = dataclasses.replace(
        analysis_config.compare_training(), solver_memory_mb=(one + eleven) / 2 / solved.MIB
    )
    config = analysis_config.CompareConfig(
        records_dir=records, out_dir=str(tmp_path / "out"), fusions=("shared",), training=rule
    )
    assert compare.one_rule(config, manifest).training.solver == "sgd"
    roomy = dataclasses.replace(config, training=dataclasses.replace(rule, solver_memory_mb=1e6))
    assert compare.one_rule(roomy, manifest) == roomy
