"""The JPEG ladder and robust decoding of awkward files."""

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from pipeline.config import offline as offline_config
from pipeline.offline import ladder
from tests import conftest


def test_odd_inputs_decode_to_rgb_or_give_a_reason(tmp_path):
    expected = conftest.write_odd_inputs(str(tmp_path))
    for name, reason in expected.items():
        path = os.path.join(tmp_path, name)
        if reason is None:
            image = ladder.load_rgb(path)
            assert image.dtype == np.uint8 and image.shape == (40, 48, 3), name
        else:
            with pytest.raises(ladder.BadImage, match=reason):
                ladder.load_rgb(path)


def test_png_behind_a_jpg_name_is_read_losslessly_and_grayscale_becomes_three_equal_channels(
    tmp_path,
):
    conftest.write_odd_inputs(str(tmp_path))
    png = ladder.load_rgb(os.path.join(tmp_path, "png_named.jpg"))
    jpeg = ladder.load_rgb(os.path.join(tmp_path, "good.jpg"))  # the same pixels, saved lossily
    assert 0 < np.abs(png.astype(int) - jpeg).mean() < 64
    gray = ladder.load_rgb(os.path.join(tmp_path, "grayscale.jpg"))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_alpha_is_composited_over_white(tmp_path):
    path = os.path.join(tmp_path, "clear.png")
    PIL.Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert (ladder.load_rgb(path) == 255).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = os.path.join(tmp_path, "deep.png")
    PIL.Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(path)
    assert ladder.load_rgb(path)[0, 0, 0] == 128


def test_ladder_branch_zero_is_the_original_and_quality_orders_the_error():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8))
    branches = ladder.jpeg_ladder(image).numpy()
    assert branches.shape == (1 + len(offline_config.QUALITIES), 37, 53, 3)
    assert np.array_equal(branches[0], image.numpy())
    errors = [np.abs(branch.astype(float) - image.numpy()).mean() for branch in branches[1:]]
    assert (
        errors[0] > errors[-1] > 0
    )  # quality 10 is far worse than quality 100, which is still lossy
    assert errors == sorted(errors, reverse=True)


def test_branch_images_equals_resizing_the_ladder_eagerly_and_in_a_dataset():
    image = tf.constant(np.random.default_rng(2).integers(0, 256, size=(60, 45, 3), dtype=np.uint8))
    expected = ladder.resize_for_backbone(ladder.jpeg_ladder(image), 32, 0.875).numpy()
    eager = ladder.branch_images(image, 32, central_crop=0.875).numpy()
    mapped = next(
        iter(
            tf.data.Dataset.from_tensors(image).map(
                lambda x: ladder.branch_images(x, 32, central_crop=0.875)
            )
        )
    ).numpy()
    assert eager.shape == (11, 32, 32, 3) and eager.dtype == np.float32
    np.testing.assert_array_equal(eager, expected)
    np.testing.assert_array_equal(mapped, expected)


def test_resizing_to_the_same_size_is_the_identity():
    image = np.random.default_rng(3).integers(0, 256, size=(1, 24, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ladder.resize_for_backbone(tf.constant(image), 24).numpy(), image)
