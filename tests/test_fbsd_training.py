"""--head fbsd --head-nodes in the trainer: several nodes' records read aligned, the head's own
losses on every branch under every fusion but concat, an export that classifies raw images as the
records do, and one-line errors for the flags."""

import dataclasses
import json
import os
import shutil

import conftest
import numpy as np
import pytest
import tensorflow as tf

from bottlenecks import errors as backbone_errors
from pipeline import errors
from pipeline.analysis import compare
from pipeline.config import analysis as analysis_config
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.training import export
from pipeline.training import fbsd
from pipeline.training import fusion
from pipeline.training import run_directory
from pipeline.training import topology
from pipeline.training import train
from tfrecords import manifest as manifest_lib
from tfrecords import reader
from tools import train_block_by_block

# Given out of order: the run orders them shallow to deep.
HEAD_NODES = ("conv5_block3_out", "conv4_block5_out", "conv4_block6_out")
ORDERED = ("conv4_block5_out", "conv4_block6_out", "conv5_block3_out")


@pytest.fixture(scope="module")
def map_records(tmp_path_factory):
    """ResNet-50 V2 records (random weights, 64 px: 4x4, 2x2 and 2x2 maps) of 18 tiny images, two
    qualities and the mirror."""
    root = tmp_path_factory.mktemp("fbsd")
    data = str(root / "images")
    conftest.write_random_images(data, per_class=6)
    config = dataclasses.replace(
        offline_config.tiny(str(root / "records"), data),
        backbone="resnet50_v2",
        nodes=ORDERED + ("pool",),
        input_size=64,
        qualities=(30, 70),
        views=("hflip",),
        validation_percent=30,
        test_percent=25,
    )
    job.make_tfrecords(config)
    return config


def _training(records_dir: str, logdir: str, **changes) -> training_config.TrainConfig:
    settings = {"head": "fbsd", "head_nodes": HEAD_NODES, "hidden_units": 8, **changes}
    return dataclasses.replace(training_config.tiny_training(records_dir, logdir), **settings)


def _by_id(dataset) -> dict:
    found = {}
    for bottlenecks, labels, image_ids in dataset:
        for row, image_id in enumerate(image_ids.numpy().astype(str)):
            found[image_id] = (
                tf.nest.map_structure(lambda value: value[row].numpy(), bottlenecks),
                int(labels[row]),
            )
    return found


@pytest.mark.slow
def test_several_nodes_are_read_aligned_image_by_image(map_records):
    manifest = manifest_lib.Manifest.read(map_records.out_dir)
    options = dict(with_ids=True, branches=(0, 3))
    together = _by_id(
        reader.make_dataset(
            manifest,
            ORDERED,
            "train",
            5,
            shuffle=True,
            seed=3,
            fold=(3, 1, False),
            **options,
        )
    )
    assert together and len(together) < manifest.num_records("train")  # the fold kept a part
    for node in ORDERED:
        alone = _by_id(reader.make_dataset(manifest, node, "train", 4, **options))
        for image_id, (bottlenecks, label) in together.items():
            assert bottlenecks.keys() == set(ORDERED)
            np.testing.assert_array_equal(bottlenecks[node], alone[image_id][0])
            assert label == alone[image_id][1]


@pytest.mark.slow
def test_records_of_nodes_that_do_not_line_up_are_refused(map_records, tmp_path):
    copy = str(tmp_path / "records")
    shutil.copytree(map_records.out_dir, copy)
    path = os.path.join(copy, "manifest.json")
    with open(path) as file:
        data = json.load(file)
    shards = data["splits"]["train"]["shards"]
    first, second = shards[0]["files"], shards[1]["files"]
    first[ORDERED[0]], second[ORDERED[0]] = second[ORDERED[0]], first[ORDERED[0]]
    with open(path, "w") as file:
        json.dump(data, file)
    manifest = manifest_lib.Manifest.read(copy)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not aligned: rerun make_tfrecords"):
        for _ in reader.make_dataset(manifest, ORDERED, "train", 2):
            pass


def test_the_loss_is_the_heads_own_on_every_branch_and_their_mean():
    shapes = {"shallow": (4, 4, 6), "deep": (2, 2, 8)}
    head = fbsd.build(shapes, 3, channels=4, seed=2, **fbsd.fitted(shapes))
    model = topology.build_multi_level(head, shapes, num_branches=2, fusion="shared")
    rng = np.random.default_rng(0)
    maps = {
        node: rng.uniform(size=(5, 2) + shape).astype(np.float32) for node, shape in shapes.items()
    }
    labels = tf.constant([0, 1, 2, 1, 0])
    outputs = model(maps, training=False)
    by_branch = [
        fbsd.per_example_loss(
            head({node: value[:, branch] for node, value in maps.items()}, training=False), labels
        )
        for branch in range(2)
    ]
    np.testing.assert_allclose(
        fusion.per_example_loss("shared", outputs, labels),
        np.mean(by_branch, axis=0),
        rtol=1e-5,
    )
    # The prediction is the mean of the branches' probabilities, as under every shared head.
    probabilities = [
        tf.nn.softmax(head({node: value[:, branch] for node, value in maps.items()})["logits"])
        for branch in range(2)
    ]
    np.testing.assert_allclose(
        tf.nn.softmax(outputs["logits"]), np.mean(probabilities, axis=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_fbsd_trains_on_the_cached_maps_and_its_export_reads_raw_images_alike(
    map_records, tmp_path
):
    config = _training(map_records.out_dir, str(tmp_path / "run"), fusion="shared")
    results = train.train_and_evaluate(config)
    assert results.head == {"kind": "fbsd", "nodes": list(ORDERED), "channels": 8}
    assert [stage.node for stage in results.stages] == ["conv5_block3_out"]
    assert results.branches == ("original", "q30", "q70", "hflip")
    # The backbone stays frozen: the checkpoint holds the head, no layer of the backbone.
    stored = [name for name, _ in tf.train.list_variables(results.stages[0].checkpoint)]
    assert any(name.startswith("head/") for name in stored)
    assert not any(name.startswith("layer") for name in stored)

    export_dir = run_directory.RunDirectory(config.logdir).export_dir
    assert export.ExportedClassifier(export_dir).nodes == list(ORDERED)
    from_records = conftest.assert_export_reads_images_as_records(export_dir, map_records)
    assert np.ptp(from_records.topology, axis=0).max() > 1e-3  # the images are told apart


@pytest.mark.slow
def test_fbsd_learns_family_weights_after_the_head(map_records, tmp_path):
    config = _training(
        map_records.out_dir,
        str(tmp_path / "run"),
        recipe="converged",
        learning_rate=0.001,
        max_epochs_per_stage=2.0,
        fusion="weighted",
        branches=("ladder", "hflip"),
        export=False,
    )
    results = train.train_and_evaluate(config)
    assert results.stages[0].combiner is not None  # stacked on held-out branch predictions
    assert 0 <= results.stages[0].best_top1 <= 1


@pytest.mark.slow
def test_fbsd_flags_and_their_mistakes_are_one_line(map_records, tmp_path):
    logdir = str(tmp_path / "run")
    parsed = train_block_by_block.parse_flags(
        ["--records", map_records.out_dir, "--logdir", logdir, "--head", "fbsd"]
        + ["--head-nodes", ",".join(HEAD_NODES)]
    )
    assert parsed.head == "fbsd" and parsed.head_nodes == HEAD_NODES
    for changes, message in (
        ({"head": "linear"}, "--head-nodes is for --head fbsd"),
        ({"head_nodes": None}, "give them as --head-nodes"),
        ({"head_init": "baseline"}, "starts at random"),
    ):
        with pytest.raises(errors.UserError, match=message):
            _training(map_records.out_dir, logdir, **changes)
    for changes, message in (
        ({"head_nodes": ("conv4_block4_out", "conv5_block3_out")}, "lack the node"),
        ({"head_nodes": ("conv5_block3_out", "pool")}, "reads maps"),
        ({"stages": ("pool",)}, "drop --stages"),
        ({"fusion": "concat"}, "scores each branch by itself"),
        ({"head_nodes": ("conv5_block3_out", "no_such_node")}, "unknown node.*no_such_node"),
    ):
        with pytest.raises((errors.UserError, backbone_errors.BackboneError), match=message):
            train.prepare(_training(map_records.out_dir, logdir, learning_rate=0.01, **changes))


@pytest.mark.slow
def test_compare_trains_fbsd_arms_on_their_own_nodes(map_records, tmp_path):
    rule = _training("", "", seeds=1)
    rule = dataclasses.replace(rule, stages=("pool",))  # compare's rule names the pool stage
    config = analysis_config.CompareConfig(
        records_dir=map_records.out_dir, out_dir=str(tmp_path), training=rule
    )
    for arm in compare.arms(config):
        training = compare.arm_training(config, arm, 0)
        assert training.head == "fbsd" and training.stages is None
