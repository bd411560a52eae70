"""The solved decision layer: the solver against scikit-learn, its path of L2 strengths, a basis of
the rows' span, classes without a training image, and a run that falls back to SGD."""

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline.config import training as training_config
from pipeline.training import run_directory
from pipeline.training import solver
from pipeline.training import train
from tests import conftest


def _problem_data(count=150, width=20, classes=4, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    centres = rng.normal(size=(classes, width))
    return centres[labels] + noise * rng.normal(size=(count, width)), labels


def test_the_solver_reaches_scikit_learns_optimum():
    features, labels = _problem_data()
    l2 = 0.01
    problem = solver.Problem(features, labels, 4)
    fitted = solver.fit(problem, l2)
    # scikit-learn minimises C * sum CE + |W|^2 / 2 with the bias unpenalised: C = 1 / (l2 N).
    reference = LogisticRegression(C=1 / (l2 * len(labels)), tol=1e-12, max_iter=100000)
    reference.fit(features, labels)
    layer = solver.Layer(reference.coef_.T, reference.intercept_)
    theirs = problem.objective(problem.parameters(layer), l2)[0]
    assert fitted.converged and abs(fitted.objective - theirs) < 1e-6
    np.testing.assert_allclose(
        problem.layer(fitted.parameters).kernel, reference.coef_.T, atol=1e-4
    )


def test_a_basis_of_the_rows_gives_the_same_optimum_for_wide_features():
    features, labels = _problem_data(count=30, width=400, seed=1)
    plain = solver.Problem(features, labels, 4)
    spanned = solver.Problem(features, labels, 4, basis=solver.Basis.of(features))
    assert spanned.shape[0] <= 30 < plain.shape[0] == 400
    fits = [solver.fit(problem, 1e-3) for problem in (plain, spanned)]
    assert fits[0].objective == pytest.approx(fits[1].objective, abs=1e-8)
    np.testing.assert_allclose(
        plain.layer(fits[0].parameters).logits(features),
        spanned.layer(fits[1].parameters).logits(features),
        atol=1e-3,
    )
    # The optimum's kernel lies in the rows' span: the basis loses nothing.
    kernel = spanned.layer(fits[1].parameters).kernel
    vectors = spanned.basis.vectors
    np.testing.assert_allclose(vectors @ (vectors.T @ kernel), kernel, atol=1e-10)


def test_a_class_without_training_images_gets_no_probability():
    features, labels = _problem_data(classes=3)
    problem = solver.Problem(features, labels, num_classes=5)  # classes 3 and 4 never seen
    layer = problem.layer(solver.fit(problem, 0.01).parameters)
    probabilities = solver.softmax(layer.logits(features).astype(np.float32))
    assert layer.kernel.shape == (20, 5)
    assert np.all(probabilities[:, 3:] == 0) and np.allclose(probabilities.sum(axis=1), 1)


def test_the_path_chooses_a_stronger_l2_when_validation_punishes_a_weak_one():
    features, labels = _problem_data(count=40, width=60, seed=2, noise=3.0)
    held_features, held_labels = _problem_data(count=400, width=60, seed=2, noise=3.0)
    held_features, held_labels = held_features[40:], held_labels[40:]
    problem = solver.Problem(features, labels, 4)

    def score(on_features, on_labels):
        return lambda layer: solver.log_loss(
            solver.softmax(layer.logits(problem.basis.project(on_features))), on_labels
        )

    # On its own training images the weakest L2 fits best; on images it has not seen, the 40
    # noisy images it fitted exactly mislead it, and a stronger L2 wins.
    fitted = solver.path(problem, score(features, labels), l2_values=solver.strengths(problem))
    held = solver.path(problem, score(held_features, held_labels))
    assert fitted.best.l2 == min(point.l2 for point in fitted.fits)
    assert held.best.l2 > 100 * fitted.best.l2
    assert min(held.scores) < held.scores[-1]
    # It stops PATH_PATIENCE points after the best: a weaker L2 would only fit the noise better.
    assert len(held.fits) == held.scores.index(min(held.scores)) + 1 + solver.PATH_PATIENCE


def test_a_run_whose_features_exceed_the_memory_budget_trains_by_sgd(tmp_path):
    values, labels = conftest.separable_features({"train": 30, "validation": 15}, num_branches=2)
    records = conftest.write_feature_records(str(tmp_path / "records"), values, labels)
    base = training_config.TrainConfig(
        records_dir=records,
        logdir=str(tmp_path / "solved"),
        stages=("pool",),
        batch_size=15,
        learning_rate=0.01,
        max_epochs_per_stage=2.0,
        export=False,
        progress=False,
    )
    solved = train.train_and_evaluate(base, announce=False)
    stage = solved.stages[0]
    assert stage.ended_by == "solved" and stage.learning_rate is None
    assert (
        stage.solver["l2"]
        == min(stage.solver["path"], key=lambda point: point["validation_loss"])["l2"]
    )
    assert solved.solver_note is None and "solved, L2" in solved.summary()
    small = dataclasses.replace(base, logdir=str(tmp_path / "sgd"), solver_memory_mb=0.01)
    trained = train.train_and_evaluate(small, announce=False)
    assert trained.stages[0].ended_by in ("plateau", "max_epochs")
    assert trained.stages[0].solver is None
    assert "over --solver-memory-mb 0.01" in trained.solver_note
    assert "Trained by SGD, not solved" in trained.summary()


@pytest.fixture(scope="module")
def two_branch_records(tmp_path_factory):
    """Two-branch records a linear layer separates only roughly: 40 train, 20 validation images."""
    values, labels = conftest.separable_features(
        {"train": 40, "validation": 20, "test": 20}, num_branches=2, noise=4.0
    )
    directory = str(tmp_path_factory.mktemp("two_branches"))
    return conftest.write_feature_records(directory, values, labels), values, labels


def _solved(records, logdir, **options) -> training_config.TrainConfig:
    settings = dict(
        records_dir=records, logdir=str(logdir), stages=("pool",), export=False, progress=False
    )
    return training_config.TrainConfig(**{**settings, **options})


def _head(checkpoint: str) -> np.ndarray:
    import tensorflow as tf

    return tf.train.load_checkpoint(checkpoint).get_tensor(
        "head/_kernel/.ATTRIBUTES/VARIABLE_VALUE"
    )


def test_refit_solves_again_on_train_and_validation_at_the_chosen_strength(
    two_branch_records, tmp_path
):
    records, values, labels = two_branch_records
    results = train.train_and_evaluate(
        _solved(records, tmp_path / "run", fusion="shared", refit=True), announce=False
    )
    chosen = results.stages[0].solver["l2"]
    refit = run_directory.read(results.refit["logdir"]).stages[0]
    assert refit.ended_by == "replay" and refit.best_top1 is None
    assert refit.solver["l2"] == chosen and refit.solver["refit"]
    # The refit's layer is the solution on every train and validation image, each branch a row.
    rows = np.concatenate([values["train"], values["validation"]]).reshape(-1, 1280)
    targets = np.repeat(np.concatenate([labels["train"], labels["validation"]]), 2)
    problem = solver.Problem(rows, targets, 3)
    expected = problem.layer(solver.fit(problem, chosen).parameters).kernel
    np.testing.assert_allclose(_head(refit.checkpoint), expected, atol=2e-3)
    assert not np.allclose(_head(results.stages[0].checkpoint), expected, atol=2e-3)


def test_folds_solve_each_fold_and_refit_at_the_median_strength(two_branch_records, tmp_path):
    logdir = tmp_path / "run"
    results = train.train_and_evaluate(
        _solved(two_branch_records[0], logdir, fusion="concat", folds=3), announce=False
    )
    chosen = [
        run_directory.read(str(logdir / "folds" / "solved" / f"fold{index}")).stages[0]
        for index in range(3)
    ]
    assert all(stage.ended_by == "solved" for stage in chosen)
    median = float(np.exp(np.median(np.log([stage.solver["l2"] for stage in chosen]))))
    stage = results.stages[0]
    assert stage.ended_by == "replay" and stage.solver["l2"] == pytest.approx(median)
    assert results.learning_rate_sweep.chosen is None
    assert "3-fold cross-validation over the 60 train and validation images" in results.selection


def test_gated_keeps_equal_weights_unless_learnt_ones_win_out_of_fold(two_branch_records, tmp_path):
    # Both branches hold the same signal: nothing for a gate to arbitrate.
    results = train.train_and_evaluate(
        _solved(two_branch_records[0], tmp_path / "run", fusion="gated"), announce=False
    )
    combiner = results.stages[0].combiner
    assert combiner["source"] == "out-of-fold predictions over the 60 train and validation images"
    assert combiner["folds"] == 5 and combiner["kept"].startswith("equal weights")
