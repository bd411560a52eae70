"""Backbones: every catalogued node builds with its shape; clear errors for user mistakes."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import errors
from bottlenecks import loading
from bottlenecks import registry
from pipeline import backbones
from pipeline.config import offline as offline_config
from tfrecords import writer

# The thesis's backbones, checked against the papers' figures (EfficientNet and ConvNeXt:
# test_modern_backbones).
SMALL_INPUT = {"inception_v3": 75, "resnet50_v2": 32, "mobilenet_v2": 32}

# Channels of some nodes, from the papers (TF-slim's end-point tests check the same).
CHANNELS = {
    "inception_v3": {
        "mixed0": 256,
        "mixed2": 288,
        "mixed3": 768,
        "mixed7": 768,
        "mixed8": 1280,
        "mixed9": 2048,
        "mixed10": 2048,
        "pool": 2048,
    },
    "resnet50_v2": {
        "conv2_block3_out": 256,
        "conv3_block4_out": 512,
        "conv4_block6_out": 1024,
        "conv5_block3_out": 2048,
        "post_relu": 2048,
        "pool": 2048,
    },
    "mobilenet_v2": {
        "expanded_conv_project_BN": 16,
        "block_1_expand_relu": 96,
        "block_13_expand_relu": 576,
        "block_15_add": 160,
        "block_16_project_BN": 320,
        "out_relu": 1280,
        "pool": 1280,
    },
}

# Spatial sizes at the default input size (299 for Inception, 224 otherwise). Keras ResNet V2
# downsamples in the last block of each stage, so conv3_block4_out is already 14x14.
DEFAULT_SPATIAL = {
    "inception_v3": {"mixed2": 35, "mixed7": 17, "mixed8": 8, "mixed10": 8},
    "resnet50_v2": {
        "conv3_block3_out": 28,
        "conv3_block4_out": 14,
        "conv4_block6_out": 7,
        "conv5_block3_out": 7,
    },
    "mobilenet_v2": {"block_13_expand_relu": 14, "block_15_add": 7, "out_relu": 7},
}


@pytest.mark.parametrize("name", sorted(SMALL_INPUT))
def test_every_catalogued_node_is_extracted_in_one_pass_with_its_shape(name):
    backbone = registry.get_backbone(name)
    model = loading.build(backbone, "none", SMALL_INPUT[name])
    extractor = cut.extractor(model, backbone, backbone.nodes)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, SMALL_INPUT[name], SMALL_INPUT[name], 3))
    outputs = extractor(pixels.astype(np.float32))
    assert set(outputs) == set(backbone.nodes)
    shapes = cut.node_shapes(model, backbone.nodes)
    for node in backbone.nodes:
        assert tuple(outputs[node].shape) == (2,) + shapes[node], node
        if node in CHANNELS[name]:
            assert shapes[node][-1] == CHANNELS[name][node], node
    assert shapes["pool"] == (CHANNELS[name]["pool"],)
    # One pass gives what separate single-node models give.
    single = cut.extractor(model, backbone, [backbone.nodes[-2]])(pixels.astype(np.float32))
    np.testing.assert_allclose(
        single[backbone.nodes[-2]], outputs[backbone.nodes[-2]], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(SMALL_INPUT))
def test_spatial_sizes_at_the_default_input_size(name):
    backbone = registry.get_backbone(name)
    shapes = cut.node_shapes(loading.build(backbone, "none"), backbone.nodes)
    for node, size in DEFAULT_SPATIAL[name].items():
        assert shapes[node][:2] == (size, size), node


@pytest.mark.parametrize("name", sorted(SMALL_INPUT))
def test_default_stages_are_block_boundaries_whose_tails_share_the_backbone_layers(name):
    backbone = registry.get_backbone(name)
    model = loading.build(backbone, "none", SMALL_INPUT[name])
    pixels = np.random.default_rng(1).uniform(0, 255, (1, SMALL_INPUT[name], SMALL_INPUT[name], 3))
    outputs = cut.extractor(model, backbone, backbone.nodes)(pixels.astype(np.float32))
    for stage in backbone.default_stages:
        tail = cut.tail(model, stage)
        np.testing.assert_allclose(tail(outputs[stage]), outputs["pool"], rtol=1e-4, atol=1e-4)
        backbone_weights = {id(weight) for weight in model.weights}
        assert all(id(weight) in backbone_weights for weight in tail.weights)


def test_a_node_inside_a_residual_block_is_not_a_stage():
    backbone = registry.get_backbone("mobilenet_v2")
    model = loading.build(backbone, "none", 32)
    with pytest.raises(ValueError, match="not a block boundary"):
        cut.tail(model, "block_14_expand_relu")


def test_unknown_node_lists_the_valid_ones():
    backbone = registry.get_backbone("inception_v3")
    with pytest.raises(ValueError, match="mixed_7.*valid nodes are: mixed0, mixed1"):
        registry.check_nodes(backbone, ["mixed_7"])


def test_unknown_backbone_and_too_small_input():
    with pytest.raises(ValueError, match="inception_v3, resnet50_v2, mobilenet_v2"):
        registry.get_backbone("vgg16")
    with pytest.raises(ValueError, match="at least 75 px"):
        loading.build(registry.get_backbone("inception_v3"), "none", 64)


def test_offline_imagenet_download_names_the_file_and_the_alternative(monkeypatch):
    def offline_builder(**kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception(
                "URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]"
            )
        return registry.BACKBONES["resnet50_v2"].builder(**kwargs)

    backbone = dataclasses.replace(registry.get_backbone("resnet50_v2"), builder=offline_builder)
    with pytest.raises(errors.BackboneError) as error:
        loading.build(backbone, "imagenet")
    message = str(error.value)
    assert "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5" in message
    assert ".keras/models" in message and "--weights PATH" in message


def test_missing_or_mismatched_weights_file(tmp_path):
    backbone = registry.get_backbone("mobilenet_v2")
    with pytest.raises(errors.BackboneError, match="no such file"):
        loading.build(backbone, str(tmp_path / "missing.h5"), 32)
    resnet = loading.build(registry.get_backbone("resnet50_v2"), "none", 32)
    path = str(tmp_path / "resnet.weights.h5")
    resnet.save_weights(path)
    with pytest.raises(ValueError, match="does not fit mobilenet_v2"):
        loading.build(backbone, path, 32)


def test_a_weights_file_at_a_url_is_copied_once_and_recorded_by_its_url(tmp_path):
    local = str(tmp_path / "mobilenet.weights.h5")
    loading.build(registry.get_backbone("mobilenet_v2"), "none", 32).save_weights(local)
    url = "ram://test_backbones/weights/mobilenet.weights.h5"
    try:
        tf.io.gfile.makedirs(os.path.dirname(url))
        tf.io.gfile.copy(local, url)
        config = dataclasses.replace(
            offline_config.tiny(str(tmp_path / "out"), str(tmp_path)), weights=url
        )
        backbone = backbones.spec(config)
        model = backbones.for_job(config, backbone, 32)
        copy = backbones.local_weights(url)
        assert (
            backbones.local_weights(url) == copy
            and os.path.basename(copy) == "mobilenet.weights.h5"
        )
        expected = loading.build(backbone, local, 32)
        for weights, wanted in zip(model.get_weights(), expected.get_weights()):
            np.testing.assert_array_equal(weights, wanted)
        identity = {**loading.weights_identity(url), "sha256": writer.file_sha256(url)}
        assert identity == {"kind": "file", "path": url, "sha256": writer.file_sha256(local)}
        rebuilt = backbones.from_identity("mobilenet_v2", identity, 32)
        np.testing.assert_array_equal(rebuilt.get_weights()[0], expected.get_weights()[0])
        with pytest.raises(errors.BackboneError, match=f"--weights {url}x: no such file"):
            backbones.check_weights_file(dataclasses.replace(config, weights=url + "x"), backbone)
    finally:
        tf.io.gfile.rmtree("ram://test_backbones")
