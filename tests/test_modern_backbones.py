"""EfficientNet (V1, V2) and ConvNeXt: every variant's catalogue is Keras's own and extracts in one
pass, its stages are block boundaries, its pixels go in as 0..255; one variant of each family end to
end (records -> block-by-block trainer -> export -> predict)."""

import csv
import dataclasses
import glob

import conftest
import keras
import numpy as np
import pytest

from bottlenecks import cut
from bottlenecks import errors
from bottlenecks import loading
from bottlenecks import registry
from pipeline.config import analysis as analysis_config
from pipeline.config import offline as offline_config
from pipeline.config import training as training_config
from pipeline.offline import job
from pipeline.offline import views
from pipeline.training import predict
from pipeline.training import run_directory
from pipeline.training import train

MODERN = tuple(name for name in registry.BACKBONES if name.startswith(("efficientnet", "convnext")))
SIZE = 32  # the smallest input they take


def test_every_variant_the_thesis_proposes_is_registered():
    assert MODERN == (
        *(f"efficientnet_b{index}" for index in range(8)),
        *(f"efficientnet_v2_{variant}" for variant in ("b0", "b1", "b2", "b3", "s")),
        "convnext_tiny",
        "convnext_small",
    )
    assert registry.get_backbone("efficientnet_b7").default_input_size == 600
    assert registry.get_backbone("efficientnet_v2_s").default_input_size == 384


# One variant of each family in the default tier; every variant in the slow one.
CATALOGUE = [
    name
    if name in ("efficientnet_b0", "convnext_tiny")
    else pytest.param(name, marks=pytest.mark.slow)
    for name in MODERN
]


@pytest.mark.parametrize("name", CATALOGUE)
def test_catalogue_extracts_in_one_pass_and_the_stages_are_block_boundaries(name):
    backbone = registry.get_backbone(name)
    model = loading.build(backbone, "none", SIZE)
    assert backbone.nodes[-1] == registry.POOL and len(set(backbone.nodes)) == len(backbone.nodes)
    layer_names = {layer.name for layer in model.layers}
    assert set(backbone.nodes[:-1]) <= layer_names  # Keras's own names
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    outputs = cut.extractor(model, backbone, backbone.nodes)(pixels)
    shapes = cut.node_shapes(model, backbone.nodes)
    for node in backbone.nodes:
        assert tuple(outputs[node].shape) == (2,) + shapes[node], node
    # The pooled vector is what the classifier reads: it gives the model's own prediction.
    np.testing.assert_allclose(
        cut.classifier_layer(model)(outputs[registry.POOL]), model(pixels), rtol=1e-4, atol=1e-6
    )
    for stage in backbone.default_stages:
        tail = cut.tail(model, stage)
        np.testing.assert_allclose(
            tail(outputs[stage]), outputs[registry.POOL], rtol=1e-4, atol=1e-4
        )
    # The model rescales 0..255 itself: the ladder's pixels go in unchanged.
    np.testing.assert_array_equal(backbone.preprocess(pixels), pixels)
    earlier, last = views.view_nodes(backbone)
    assert len(shapes[earlier]) == len(shapes[last]) == 3  # two maps to find the object in
    assert backbone.imagenet_url.endswith("/" + backbone.imagenet_file)


def test_offline_imagenet_weights_name_the_efficientnet_file(monkeypatch):
    def offline(**kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")
        return keras.applications.EfficientNetB0(**kwargs)

    backbone = dataclasses.replace(registry.get_backbone("efficientnet_b0"), builder=offline)
    with pytest.raises(errors.BackboneError) as error:
        loading.build(backbone, "imagenet")
    message = str(error.value)
    assert "efficientnetb0.h5" in message and "--weights PATH" in message


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_b0", "convnext_tiny"])
def test_records_train_block_by_block_export_and_predict(name, tmp_path):
    backbone = registry.get_backbone(name)
    data = str(tmp_path / "images")
    conftest.write_random_images(data, per_class=2)
    records = dataclasses.replace(
        offline_config.tiny(str(tmp_path / "records"), data),
        backbone=name,
        nodes=(backbone.default_stages[1], registry.POOL),
        input_size=SIZE,
        qualities=(50,),
        num_shards=1,
        validation_percent=34,
    )
    job.make_tfrecords(records)
    training = dataclasses.replace(
        training_config.tiny_training(records.out_dir, str(tmp_path / "run")),
        stages=(registry.POOL, backbone.default_stages[1]),  # the head, then one more block
    )
    results = train.train_and_evaluate(training)
    assert [stage.node for stage in results.stages] == list(training.stages)
    export_dir = run_directory.RunDirectory(training.logdir).export_dir
    predictions = str(tmp_path / "predictions.csv")
    files = sorted(glob.glob(f"{data}/*/*.jpg"))
    skipped = predict.predict_files(
        analysis_config.PredictConfig(model=export_dir, images=tuple(files), csv=predictions)
    )
    with open(predictions) as file:
        rows = list(csv.DictReader(file))
    assert skipped == 0 and len(rows) == len(files)
    assert {row["label"] for row in rows} <= {"cat", "dog", "fox"}
    assert all(0 < float(row["confidence"]) <= 1 for row in rows)
