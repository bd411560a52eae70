"""hub: and savedmodel: backbones: image feature vector models from a SavedModel, through records,
training and export.

A small Keras model is saved here in both forms the offline stage calls: a callable object (TF-Hub
style, tf.saved_model.save of an object with __call__) and keras.Model.export (its serving_default
signature).
"""

import dataclasses
import importlib.machinery
import json
import os
import shutil
import sys
import types
import urllib.error

import keras
import numpy as np
import pytest
import tensorflow as tf

from bottlenecks import loading
from bottlenecks import registry
from pipeline import backbones
from pipeline.analysis import evaluate
from pipeline.analysis import predictions as predictions_lib
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.offline import ladder
from pipeline.training import export
from pipeline.training import train
from tests import conftest
from tools import make_tfrecords

SIZE = 32
FEATURES = 16
HANDLE = "https://tfhub.dev/example/feature_vector/1"


class _HubStyle(tf.Module):
    """What TF-Hub's TF2 image models look like: a callable object whose __call__ takes
    training=..."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @tf.function
    def __call__(self, images, training=False):
        return self.model(images, training=training)


@pytest.fixture(scope="module")
def feature_model(tmp_path_factory):
    """(the Keras model, {kind: its SavedModel folder}) for kinds hub_style and keras_export."""
    root = tmp_path_factory.mktemp("feature_model")
    keras.utils.set_random_seed(3)
    images = keras.Input((SIZE, SIZE, 3))
    features = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(images)
    features = keras.layers.GlobalAveragePooling2D()(features)
    model = keras.Model(images, keras.layers.Dense(FEATURES, activation="relu")(features))
    hub_style = _HubStyle(model)
    for training in (False, True):
        hub_style.__call__.get_concrete_function(
            tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32), training
        )
    tf.saved_model.save(hub_style, str(root / "hub_style"))
    model.export(str(root / "keras_export"), verbose=False)
    return model, {"hub_style": str(root / "hub_style"), "keras_export": str(root / "keras_export")}


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def fake_hub(monkeypatch):
    """tensorflow_hub (and tf_keras) stand-ins: resolve() returns the folder `models` maps a handle
    to, as from the cache, and fails as offline for any other handle."""
    models = {}

    def resolve(handle):
        if handle not in models:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return models[handle]

    monkeypatch.setitem(sys.modules, "tensorflow_hub", _module("tensorflow_hub", resolve=resolve))
    monkeypatch.setitem(sys.modules, "tf_keras", _module("tf_keras"))
    return models


def _config(out_dir, data_dir, backbone, **changes):
    return dataclasses.replace(
        offline_config.tiny(str(out_dir), data_dir),
        backbone=backbone,
        weights=None,
        nodes=None,
        input_size=SIZE,
        num_shards=1,
        validation_percent=30,
        test_percent=0,
        **changes,
    )


def _scaled(pixels, input_range):
    low, high = input_range
    return pixels * ((high - low) / 255.0) + low


@pytest.mark.parametrize(
    "kind, source, input_range",
    [
        ("hub_style", "savedmodel", None),  # the default range, [0, 1]
        ("keras_export", "savedmodel", (-1.0, 1.0)),
        ("hub_style", "hub", (-1.0, 1.0)),
    ],
)
def test_pool_bottlenecks_are_the_models_outputs_on_the_ladder_images(
    feature_model, fake_hub, tmp_path, tiny_dataset, kind, source, input_range
):
    model, paths = feature_model
    fake_hub[HANDLE] = paths[kind]
    backbone = f"savedmodel:{paths[kind]}" if source == "savedmodel" else f"hub:{HANDLE}"
    config = _config(tmp_path / "records", tiny_dataset, backbone, input_range=input_range)
    summary = job.make_tfrecords(config).summary
    assert summary["images_written"] == 12
    with open(tmp_path / "records" / "manifest.json") as file:
        manifest = json.load(file)
    assert manifest["backbone"] == backbone and manifest["input_size"] == SIZE
    assert manifest["input_range"] == list(input_range or (0.0, 1.0))
    assert manifest["weights"]["kind"] == source and len(manifest["weights"]["sha256"]) == 64
    if source == "hub":  # the handle, not where the cache happens to keep it
        assert manifest["weights"] == {
            "kind": "hub",
            "handle": HANDLE,
            "sha256": manifest["weights"]["sha256"],
        }
    else:
        assert manifest["weights"]["path"] == paths[kind]
    assert list(manifest["nodes"]) == ["pool"] and manifest["nodes"]["pool"]["shape"] == [
        11,
        FEATURES,
    ]
    checked = 0
    for split in ("train", "validation"):
        for bottlenecks, _, image_ids in conftest.records_dataset(
            config.out_dir, "pool", split, 4, with_ids=True
        ):
            for bottleneck, image_id in zip(bottlenecks.numpy(), image_ids.numpy().astype(str)):
                pixels = ladder.branch_images(
                    ladder.load_rgb(os.path.join(tiny_dataset, image_id)), SIZE, config.qualities
                )
                expected = model(_scaled(pixels, input_range or (0.0, 1.0))).numpy()
                np.testing.assert_allclose(bottleneck, expected, rtol=1e-5, atol=1e-6)
                assert (
                    np.ptp(expected, axis=0).max() > 0
                )  # the branches differ, so the check has teeth
                checked += 1
    assert checked == 12


def test_training_and_export_need_nothing_of_the_savedmodel_afterwards(
    feature_model, tmp_path, tiny_dataset
):
    _, paths = feature_model
    copy = str(tmp_path / "model")
    shutil.copytree(paths["keras_export"], copy)
    records = str(tmp_path / "records")
    job.make_tfrecords(
        _config(records, tiny_dataset, f"savedmodel:{copy}", input_range=(-1.0, 1.0))
    )
    config = dataclasses.replace(
        training_config.tiny_training(records, str(tmp_path / "run")), max_epochs_per_stage=2.0
    )
    for refused in ({"head_init": "baseline"}, {"imagenet_labels": True}):
        with pytest.raises(ValueError, match="image feature vector model without one"):
            train.train_and_evaluate(dataclasses.replace(config, **refused))
    results = train.train_and_evaluate(config)
    assert [stage.node for stage in results.stages] == ["pool"]  # the backbone's one stage
    assert results.label_space == "dataset" and results.baseline is None
    assert "no stock-model baseline" in results.baseline_note
    setup = train.prepare(config)
    assert setup.class_names == ("cat", "dog", "fox") and setup.backbone.input_range == (-1.0, 1.0)
    cached = conftest.predict_records(
        setup, setup.config.schedule[-1], results.stages[-1].checkpoint
    )

    shutil.rmtree(copy)  # the export carries the SavedModel and its input range
    classifier = export.ExportedClassifier(results.export["path"])
    assert classifier.description["input_range"] == [-1.0, 1.0]
    assert len(cached) >= 2
    for image_id, probabilities in cached.items():
        np.testing.assert_allclose(
            classifier.classify_file(os.path.join(tiny_dataset, image_id)),
            probabilities,
            rtol=1e-4,
            atol=1e-6,
        )
    predictions = predictions_lib.from_records(
        results.export["path"], setup.manifest, split="validation"
    )
    result = evaluate.evaluate(predictions)
    assert "baseline" not in result and "savedmodel:" in result["note"]
    with pytest.raises(ValueError, match="which is gone"):
        backbones.from_manifest(setup.manifest)


def test_a_savedmodel_at_a_url_loads_from_there(feature_model):
    model, paths = feature_model
    url = "ram://test_savedmodel/hub_style"
    try:
        conftest.copy_to_url(paths["hub_style"], url)
        backbone = registry.get_backbone(f"savedmodel:{url}")
        assert backbone.name == f"savedmodel:{url}"  # a URL is not made into a local absolute path
        pixels = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
        np.testing.assert_allclose(
            loading.build(backbone, None, SIZE)(pixels), model(pixels), rtol=1e-5, atol=1e-6
        )
        assert backbones.directory_sha256(url) == backbones.directory_sha256(paths["hub_style"])
    finally:
        tf.io.gfile.rmtree("ram://test_savedmodel")


def test_backbone_names_input_size_and_range():
    backbone = registry.get_backbone("savedmodel:relative/model")
    assert backbone.name == "savedmodel:" + os.path.abspath("relative/model")
    assert (backbone.nodes, backbone.default_stages, backbone.default_input_size) == (
        ("pool",),
        ("pool",),
        224,
    )
    assert backbone.input_range == (0.0, 1.0) and not backbone.has_classifier
    np.testing.assert_allclose(
        registry.get_backbone("hub:h", (-1, 1)).preprocess(np.array([0.0, 127.5, 255.0])),
        [-1.0, 0.0, 1.0],
    )
    assert offline_config.FEATURE_VECTOR_PREFIXES == registry.FEATURE_VECTOR_PREFIXES
    with pytest.raises(ValueError, match="LOW < HIGH"):
        registry.get_backbone("hub:h", (1, 0))
    with pytest.raises(ValueError, match="two numbers"):
        registry.get_backbone("hub:h", (0, 1, 2))
    with pytest.raises(ValueError, match="needs a path"):
        registry.get_backbone("savedmodel:")
    with pytest.raises(ValueError, match="one node pool"):
        registry.check_nodes(backbone, ["block_1"])
    with pytest.raises(ValueError, match="--input-range is for hub: and savedmodel:"):
        registry.get_backbone("mobilenet_v2", (0, 1))
    assert offline_config.ExtractConfig(out_dir="o", data_dir="d").weights == "imagenet"
    assert offline_config.ExtractConfig(out_dir="o", data_dir="d", backbone="hub:h").weights is None
    with pytest.raises(ValueError, match="--weights does not apply"):
        offline_config.ExtractConfig(
            out_dir="o", data_dir="d", backbone="savedmodel:m", weights="imagenet"
        )


def _one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("make_tfrecords: error: "), error
    return error


def test_user_errors_are_one_line(feature_model, fake_hub, tmp_path, tiny_dataset, capsys):
    _, paths = feature_model
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--data-dir", tiny_dataset, "--out-dir", str(tmp_path / "out"), "--no-progress"]
    cases = [
        (["--backbone", f"savedmodel:{tmp_path / 'nowhere'}"], "no such directory"),
        (["--backbone", f"savedmodel:{empty}"], "not a SavedModel (it has no saved_model.pb)"),
        (
            ["--backbone", f"savedmodel:{paths['hub_style']}", "--nodes", "pool,conv2d"],
            "has the one node pool",
        ),
        (
            ["--backbone", f"savedmodel:{paths['keras_export']}"],
            "takes 32x32 images, not 224x224: pass --input-size 32",
        ),
        (
            ["--backbone", f"savedmodel:{paths['keras_export']}", "--input-range", "1,-1"],
            "LOW < HIGH",
        ),
        (["--backbone", f"hub:{HANDLE}"], "Without internet, download"),  # the fake hub is offline
    ]
    for flags, message in cases:
        assert make_tfrecords.main(base + flags) == 2, flags
        error = _one_line_error(capsys)
        assert message in error, error
    assert "savedmodel:DIR" in error and "TFHUB_CACHE_DIR" in error
    # A model that does not build records no job, so the corrected command is not refused as another
    # job's.
    assert not os.path.exists(tmp_path / "out" / ".progress" / "job.json")
    for flags in (
        ["--backbone", "hub:h", "--weights", "none"],
        ["--backbone", "mobilenet_v2", "--input-range", "0,1"],
        ["--backbone", "hub:h", "--input-range", "a,b"],
    ):
        with pytest.raises(SystemExit) as raised:
            make_tfrecords.parse_flags(base + flags)
        assert raised.value.code == 2


def test_hub_without_tensorflow_hub_names_the_install(monkeypatch, tmp_path, tiny_dataset, capsys):
    for name in ("tensorflow_hub", "tf_keras"):
        monkeypatch.setitem(sys.modules, name, None)  # not installed, whatever this machine has
    argv = [
        "--data-dir",
        tiny_dataset,
        "--out-dir",
        str(tmp_path / "out"),
        "--backbone",
        f"hub:{HANDLE}",
    ]
    assert make_tfrecords.main(argv) == 2
    error = _one_line_error(capsys)
    assert "needs tensorflow_hub and tf_keras" in error and "pip install --no-deps" in error
    assert "savedmodel:DIR" in error


def test_a_model_that_is_no_feature_vector_model_is_refused(tmp_path):
    images = keras.Input((SIZE, SIZE, 3))
    keras.Model(images, keras.layers.Conv2D(4, 3)(images)).export(
        str(tmp_path / "maps"), verbose=False
    )
    refusal = r"not an image feature vector model: its output has shape \(None, 30, 30, 4\)"
    with pytest.raises(ValueError, match=refusal):
        loading.build(registry.get_backbone(f"savedmodel:{tmp_path / 'maps'}"), None, SIZE)
