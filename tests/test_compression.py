"""Feature compression: the code layer shrinks as configured, losses respect the threshold, and the
command writes its report and records the reader reads."""

import dataclasses
import json

import numpy as np
import pytest

from pipeline.analysis import compression
from pipeline.config import analysis as analysis_config
from pipeline.config import training as training_config
from pipeline.training import train
from tests import conftest
from tfrecords import manifest as manifest_lib
from tools import compress as compress_tool


def _low_rank_features(rows=64, size=12, rank=2, seed=0):
    rng = np.random.default_rng(seed)
    mixed = rng.uniform(size=(rows, rank)) @ rng.normal(size=(rank, size))
    return ((mixed - mixed.min(0)) / (mixed.max(0) - mixed.min(0))).astype(np.float32)


def _config(**overrides):
    settings = dict(
        records_dir="records",
        out_dir="out",
        code_size=6,
        epochs=15,
        learning_rate=0.02,
        batch_size=16,
        fine_tune_epochs=2,
        min_code_size=2,
        progress=False,
    )
    return analysis_config.CompressConfig(**{**settings, **overrides})


def _trained(config):
    features = _low_rank_features()
    model = compression.build_autoencoder(features.shape[1], config.code_size, seed=0)
    compression.train(model, features, config.epochs, config)
    return model, features


def test_a_loose_threshold_prunes_to_the_minimum_and_a_tight_one_removes_nothing():
    loose = _config(loss_threshold=1.0)
    model, features = _trained(loose)
    pruned, history, _ = compression.prune_codes(model, features, features, loose)
    assert [row["code_size"] for row in history] == [6, 5, 4, 3, 2]
    assert compression.get_weights(pruned).hidden_units == 2

    tight = _config(loss_threshold=1e-9)
    kept, history, _ = compression.prune_codes(model, features, features, tight)
    assert compression.get_weights(kept).hidden_units == 6 and len(history) == 1


def test_every_kept_step_stays_under_the_threshold():
    model, features = _trained(_config())
    config = _config(loss_threshold=1.5 * compression.reconstruction_loss(model, features))
    pruned, history, snapshots = compression.prune_codes(model, features, features, config)
    assert len(history) >= 2 and all(
        row["validation_loss"] <= config.loss_threshold for row in history
    )
    size = compression.get_weights(pruned).hidden_units
    assert size == history[-1]["code_size"] and size in snapshots
    assert compression.reconstruction_loss(pruned, features) == pytest.approx(
        history[-1]["validation_loss"], rel=1e-4
    )


def test_every_n_epochs_removes_one_unit_each_time_down_to_the_minimum():
    config = _config(prune_every_epochs=1, min_code_size=3, loss_threshold=1e-9, report_sizes=(4,))
    model, features = _trained(config)
    pruned, history, snapshots = compression.prune_codes(model, features, features, config)
    assert [row["code_size"] for row in history] == [6, 5, 4, 3]
    assert sorted(snapshots) == [3, 4, 6]


@pytest.mark.slow
def test_compress_command_reports_and_writes_code_records(records, tmp_path):
    out = tmp_path / "out"
    assert (
        compress_tool.main(
            [
                "--records",
                records,
                "--out-dir",
                str(out),
                "--code-size",
                "8",
                "--epochs",
                "3",
                "--loss-threshold",
                "1e9",
                "--min-code-size",
                "6",
                "--fine-tune-epochs",
                "1",
                "--classifier-epochs",
                "2",
                "--patience",
                "1",
                "--write-records",
                "--no-progress",
            ]
        )
        == 0
    )
    result = json.loads((out / "compression.json").read_text())
    assert [row["code_size"] for row in result["results"]] == [2048, 8, 6]
    has_test = manifest_lib.Manifest.read(records).num_records("test") > 0
    assert result["test_split"] == ("test" if has_test else "validation")
    assert ("no test split" in (out / "compression.md").read_text()) != has_test
    codes, labels = next(iter(conftest.records_dataset(str(out / "records"), "pool", "train", 4)))
    assert (
        tuple(codes.shape) == (4, 1, 6)
        and float(codes.numpy().min()) >= 0
        and float(codes.numpy().max()) <= 1
    )
    assert (out / "compression.png").stat().st_size > 0


@pytest.mark.slow
def test_the_trainer_reads_code_records_with_a_head_over_the_dataset_classes(records, tmp_path):
    out = tmp_path / "out"
    assert (
        compress_tool.main(
            [
                "--records",
                records,
                "--out-dir",
                str(out),
                "--code-size",
                "8",
                "--epochs",
                "3",
                "--loss-threshold",
                "1e-12",
                "--classifier-epochs",
                "1",
                "--write-records",
                "--no-progress",
            ]
        )
        == 0
    )
    codes = str(out / "records")
    assert manifest_lib.Manifest.read(codes).codes and not manifest_lib.Manifest.read(records).codes
    config = dataclasses.replace(
        training_config.tiny_training(codes, str(tmp_path / "run")),
        stages=("pool",),
        max_epochs_per_stage=3.0,
    )
    results = train.train_and_evaluate(config)
    assert results.label_space == "dataset" and results.baseline is None
    assert (
        "autoencoder codes" in results.export_skipped and not (tmp_path / "run" / "export").exists()
    )
    setup = train.prepare(config)
    model = setup.build_model("pool")
    assert tuple(model.input.shape) == (None, 1, 8)
    assert setup.head.units == 3  # cat, dog, fox
    stage = results.stages[0]
    probabilities = conftest.predict_records(setup, setup.config.schedule[0], stage.checkpoint)
    assert len(probabilities) == manifest_lib.Manifest.read(codes).num_records("validation")
    right = np.mean(
        [
            np.argmax(probabilities[image_id]) == label
            for image_id, label in _labels(codes, "validation").items()
        ]
    )
    assert right == pytest.approx(stage.best_top1, abs=1e-6)
    with pytest.raises(ValueError, match="autoencoder codes"):
        train.prepare(dataclasses.replace(config, label_space="imagenet"))


def _labels(records_dir: str, split: str) -> dict:
    return {
        image_id.decode(): int(label)
        for _, labels, image_ids in conftest.records_dataset(
            records_dir, "pool", split, 16, with_ids=True
        )
        for image_id, label in zip(image_ids.numpy(), labels.numpy())
    }


def test_label_space_imagenet_is_refused_for_classes_that_are_not_imagenets(records, tmp_path):
    config = dataclasses.replace(
        training_config.tiny_training(records, str(tmp_path / "run")),
        stages=("pool",),
        label_space="imagenet",
    )
    with pytest.raises(
        ValueError, match="needs classes that are ImageNet's .* cat, dog, fox; use --label-space"
    ):
        train.prepare(config)
    with pytest.raises(ValueError, match="--label-space must be one of auto, dataset, imagenet"):
        dataclasses.replace(config, label_space="wnid")
