"""The block-by-block trainer: topology, schedule, two replicas, resume after SIGKILL, TensorBoard,
export."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from bottlenecks import loading
from bottlenecks import registry
from pipeline.config import training as training_config
from pipeline.training import export
from pipeline.training import heads
from pipeline.training import results as results_lib
from pipeline.training import topology
from pipeline.training import train
from tests import conftest
from tools import predict as predict_tool

STAGES = conftest.TRAIN_STAGES


def _config(records, logdir, **changes):
    base = dataclasses.replace(
        training_config.tiny_training(records, str(logdir)),
        stages=STAGES,
        max_epochs_per_stage=3.0,
        plateau_epochs=100.0,
    )
    return dataclasses.replace(base, **changes)


def _scalars(run_directory, tag):
    accumulator = event_accumulator.EventAccumulator(run_directory, size_guidance={"tensors": 0})
    accumulator.Reload()
    return [
        (event.step, float(tf.make_ndarray(event.tensor_proto)))
        for event in accumulator.Tensors(tag)
    ]


def test_branches_share_one_tail_and_the_batched_call_equals_per_branch_calls():
    backbone_model = loading.build(registry.get_backbone("resnet50_v2"), "none", 32)
    models = {}
    for num_branches in (3, 11):
        head = heads.build_head("linear", 5)
        models[num_branches] = topology.build(
            backbone_model, "conv4_block6_out", num_branches, head
        )
    tail_parameters = sum(
        int(np.prod(weight.shape))
        for weight in keras.Model(
            backbone_model.get_layer("conv4_block6_out").output, backbone_model.layers[-2].output
        ).weights
    )
    for num_branches, model in models.items():
        assert model.count_params() == tail_parameters + num_branches * 2048 * 5 + 5
    model = models[3]
    bottlenecks = np.random.default_rng(0).normal(size=(2, 3, 1, 1, 1024)).astype(np.float32)
    tail = train.cut.tail(backbone_model, "conv4_block6_out")
    separately = np.concatenate([tail(bottlenecks[:, branch]) for branch in range(3)], axis=1)
    head = model.get_layer("decision")
    np.testing.assert_allclose(model(bottlenecks)["logits"], head(separately), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_one_and_two_replicas_give_the_same_losses(records, tmp_path):
    one = train.train_and_evaluate(
        _config(records, tmp_path / "one", devices=("/cpu:0",), export=False)
    )
    two = train.train_and_evaluate(
        _config(records, tmp_path / "two", devices=("/cpu:0", "/cpu:1"), export=False)
    )
    assert one.replicas == 1 and two.replicas == 2
    for stage in STAGES:
        run = f"stage{STAGES.index(stage)}_{stage}"
        losses_one = _scalars(str(tmp_path / "one" / run / "train"), "loss")
        losses_two = _scalars(str(tmp_path / "two" / run / "train"), "loss")
        assert len(losses_one) >= 3
        assert [step for step, _ in losses_one] == [step for step, _ in losses_two]
        np.testing.assert_allclose(
            [loss for _, loss in losses_one], [loss for _, loss in losses_two], rtol=1e-4
        )
    assert [stage.best_top1 for stage in one.stages] == [stage.best_top1 for stage in two.stages]


@pytest.mark.slow
def test_two_replica_runs_with_different_head_shapes_share_one_process(records, tmp_path):
    # jpeg-ladder-compare trains arms of different widths one after another on the same devices.
    devices = ("/cpu:0", "/cpu:1")
    for name, branches in (("single", (0,)), ("all", None)):
        results = train.train_and_evaluate(
            _config(
                records,
                tmp_path / name,
                devices=devices,
                branches=branches,
                stages=STAGES[:1],
                export=False,
            )
        )
        assert results.replicas == 2 and len(results.branch_indices) == (1 if branches else 11)


@pytest.mark.slow
def test_schedule_results_tensorboard_and_export(records, tmp_path):
    results = train.train_and_evaluate(_config(records, tmp_path / "run", momentum=0.9))
    assert [stage.node for stage in results.stages] == list(STAGES)
    assert [stage.learning_rate for stage in results.stages] == pytest.approx([0.01, 0.001])
    assert results.stages[1].thesis_block == "block 4"
    assert results.branches[0] == "original" and len(results.branches) == 11
    assert results.baseline is None  # random weights on made-up classes: no stock baseline
    steps_per_epoch = -(-conftest.num_records(records, "train") // 4)
    for stage in results.stages:
        assert stage.steps == 3 * steps_per_epoch and stage.ended_by == "max_epochs"
        assert os.path.exists(stage.checkpoint + ".index")
    with open(tmp_path / "run" / "results.json") as file:
        saved = json.load(file)
    assert saved == json.loads(json.dumps(results.to_json())) and "baseline" not in saved
    assert results_lib.Results.from_json(saved) == results

    validation = str(tmp_path / "run" / "stage1_conv4_block6_out" / "validation")
    top1 = _scalars(validation, "top1")
    expected_steps = sorted({0, *range(2, 3 * steps_per_epoch + 1, 2), 3 * steps_per_epoch})
    assert [step for step, _ in top1] == expected_steps
    assert max(value for _, value in top1) == pytest.approx(results.stages[1].best_top1)
    # Stage 1 starts from stage 0's best checkpoint: its first evaluation repeats stage 0's best.
    assert top1[0][1] == pytest.approx(results.stages[0].best_top1)
    assert _scalars(validation, "learning_rate")[0][1] == pytest.approx(0.001)
    for tag in ("loss", "top5"):
        assert len(_scalars(validation, tag)) == len(expected_steps)
    stages = _scalars(str(tmp_path / "run" / "stages"), "best_top1")
    assert stages == [
        (0, pytest.approx(results.stages[0].best_top1)),
        (1, pytest.approx(results.stages[1].best_top1)),
    ]
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "run" / "stages"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    assert "jpeg_ladder" in accumulator.Tags()["tensors"]

    # The exported model on raw images equals the trainer on the cached bottlenecks of those images.
    setup = train.prepare(_config(records, tmp_path / "run", momentum=0.9))
    cached = conftest.predict_records(
        setup, setup.config.schedule[-1], results.stages[-1].checkpoint
    )
    classifier = export.ExportedClassifier(str(tmp_path / "run" / "export"))
    data_dir = json.load(open(os.path.join(records, "manifest.json")))["config"]["data_dir"]
    assert len(cached) == conftest.num_records(records, "validation") >= 2
    for image_id, probabilities in cached.items():
        np.testing.assert_allclose(
            classifier.classify_file(os.path.join(data_dir, image_id)),
            probabilities,
            rtol=1e-4,
            atol=1e-6,
        )
    assert classifier.class_names == ["cat", "dog", "fox"]

    # jpeg-ladder-predict over a flat unlabelled folder, two images a request through
    # serving_default: one CSV row per readable image, with the top class and its probability; an
    # unreadable file is named and skipped (exit status 1).
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for image_id in cached:
        os.symlink(os.path.join(data_dir, image_id), flat / image_id.replace("/", "_"))
    (flat / "broken.jpg").write_bytes(b"not an image")
    table = tmp_path / "predictions.csv"
    assert (
        predict_tool.main(
            [
                "--model",
                str(tmp_path / "run" / "export"),
                str(flat),
                "--csv",
                str(table),
                "--batch-size",
                "2",
            ]
        )
        == 1
    )
    with open(table) as file:
        rows = list(csv.DictReader(file))
    assert [row["image"] for row in rows] == sorted(
        str(flat / image_id.replace("/", "_")) for image_id in cached
    )
    for row in rows:
        probabilities = cached[os.path.basename(row["image"]).replace("_", "/", 1)]
        assert row["label"] == classifier.class_names[int(np.argmax(probabilities))]
        assert float(row["confidence"]) == pytest.approx(float(np.max(probabilities)), abs=1e-4)


@pytest.mark.slow
def test_killed_training_resumes_where_it_was(records, tmp_path):
    command = [
        sys.executable,
        "-m",
        "tools.train_block_by_block",
        "--recipe",
        "thesis",
        "--records",
        records,
        "--stages",
        ",".join(STAGES),
        "--batch-size",
        "4",
        "--eval-every-steps",
        "2",
        "--max-epochs-per-stage",
        "3",
        "--plateau-epochs",
        "100",
        "--no-progress",
    ]
    environment = dict(os.environ, PYTHONPATH=conftest.PROJECT_ROOT)
    killed = tmp_path / "killed"
    job = subprocess.Popen(
        command + ["--logdir", str(killed)],
        env=environment,
        cwd=conftest.PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = killed / "checkpoints" / "stage1_conv4_block6_out" / "latest" / "checkpoint"
    deadline = time.time() + 240
    while job.poll() is None and time.time() < deadline:
        if marker.exists() and "ckpt-2" in marker.read_text():
            job.send_signal(signal.SIGSTOP)
            break
        time.sleep(0.01)
    partial = json.loads((killed / "results.json").read_text())
    job.kill()
    job.wait()
    assert [stage["node"] for stage in partial["stages"]] == ["pool"], "killed inside stage 1"

    resumed = subprocess.run(
        command + ["--logdir", str(killed)],
        env=environment,
        cwd=conftest.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(
        command + ["--logdir", str(tmp_path / "straight")],
        env=environment,
        cwd=conftest.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    after = json.loads((killed / "results.json").read_text())
    reference = json.loads((tmp_path / "straight" / "results.json").read_text())
    for got, expected in zip(after["stages"], reference["stages"], strict=True):
        assert (got["node"], got["steps"], got["best_step"]) == (
            expected["node"],
            expected["steps"],
            expected["best_step"],
        )
        assert got["best_top1"] == pytest.approx(expected["best_top1"])
    losses_killed = _scalars(str(killed / "stage1_conv4_block6_out" / "train"), "loss")
    losses_straight = dict(
        _scalars(str(tmp_path / "straight" / "stage1_conv4_block6_out" / "train"), "loss")
    )
    for step, loss in losses_killed:
        assert loss == pytest.approx(losses_straight[step], rel=1e-4)


def test_clear_errors(records, tmp_path):
    with pytest.raises(
        ValueError, match="lack the node.*conv3_block4_out.*--nodes pool,conv3_block4_out"
    ):
        train.train_and_evaluate(
            _config(records, tmp_path / "a", stages=("pool", "conv3_block4_out"))
        )
    with pytest.raises(
        ValueError, match=r"--branches 11: the records hold branches 0\.\.10 \(original"
    ):
        train.train_and_evaluate(_config(records, tmp_path / "d", branches=(0, 11)))
    with pytest.raises(ValueError, match=r"--branches crop: no such branch or family.*ladder"):
        train.train_and_evaluate(_config(records, tmp_path / "d", branches=("original", "crop")))
    with pytest.raises(ValueError, match="earlier node than the one before it"):
        train.train_and_evaluate(
            _config(records, tmp_path / "b", stages=("conv4_block6_out", "pool"))
        )
    with pytest.raises(
        ValueError, match="--head-init baseline needs the backbone's own ImageNet classes"
    ):
        train.train_and_evaluate(_config(records, tmp_path / "c", head_init="baseline"))
    # The refused run above recorded nothing, so the corrected command runs in the same folder.
    train.train_and_evaluate(
        _config(records, tmp_path / "d", stages=("pool",), max_epochs_per_stage=1.0, export=False)
    )
    with pytest.raises(ValueError, match="other settings.*batch_size"):
        train.train_and_evaluate(_config(records, tmp_path / "d", stages=("pool",), batch_size=2))


@pytest.mark.slow
def test_reading_every_epoch_under_glibc_malloc_suggests_tcmalloc_once(
    records, tmp_path, monkeypatch, capsys
):
    from pipeline.training import input_pipeline

    input_pipeline.suggest_allocator.cache_clear()
    printed = []
    for allocator, cache_mb in (
        ("tcmalloc", 0.0),
        ("malloc", 2048.0),
        ("malloc", 0.0),
        ("malloc", 0.0),
    ):
        monkeypatch.setattr(
            input_pipeline.reader, "loaded_allocator", lambda allocator=allocator: allocator
        )
        setup = train.prepare(
            _config(records, tmp_path / "run", stages=STAGES[:1], cache_mb=cache_mb, progress=True)
        )
        input_pipeline.stage_dataset(setup, STAGES[0], "train", training=True)
        input_pipeline.stage_dataset(setup, STAGES[0], "validation", training=False)
        printed.append(capsys.readouterr().out.count("LD_PRELOAD=libtcmalloc_minimal.so.4"))
    assert printed == [0, 0, 1, 0]  # not with tcmalloc, not when cached, then once per process
