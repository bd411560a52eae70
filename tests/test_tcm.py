"""The content-adaptive (tcm) branch's ops against a NumPy/SciPy reference: JPEG's tables, the block
mask, the per-block choice of quality, and the same pixels eager, traced and at any size."""

import io

import numpy as np
import PIL.Image
import pytest
import scipy.fft
import tensorflow as tf

from pipeline.config import offline as offline_config
from pipeline.offline import tcm
from pipeline.offline import views

# JFIF's full-range RGB -> YCbCr, written out again for the reference.
TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
OFFSET = np.array([0.0, 128.0, 128.0])


def _photo(height=37, width=53, seed=0):
    """Random blocks beside flat ones, so that both qualities are chosen."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3))
    image[: height // 2, : width // 2] = rng.integers(0, 256, size=3)  # one flat corner
    return image.astype(np.uint8)


def _padded(image):
    height, width, _ = image.shape
    rows = np.minimum(np.arange(-(-height // 8) * 8), height - 1)
    columns = np.minimum(np.arange(-(-width // 8) * 8), width - 1)
    return image[rows][:, columns].astype(np.float64)


def _reference(image, low, high, std):
    """The module's algorithm in NumPy and SciPy, block by block."""
    padded = _padded(image)
    ycbcr = padded @ TO_YCBCR.T + OFFSET - 128.0
    out = np.zeros_like(ycbcr)
    tables = {quality: tcm.quantisation_tables(quality) for quality in (low, high)}
    for top in range(0, ycbcr.shape[0], 8):
        for left in range(0, ycbcr.shape[1], 8):
            block = ycbcr[top : top + 8, left : left + 8]
            keep = block[..., 0].std() >= std
            for channel in range(3):
                coefficients = scipy.fft.dctn(block[..., channel], norm="ortho")
                table = tables[high if keep else low][channel]
                scaled = coefficients / table
                quantised = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) * table
                out[top : top + 8, left : left + 8, channel] = scipy.fft.idctn(
                    quantised, norm="ortho"
                )
    rgb = (out + 128.0 - OFFSET) @ np.linalg.inv(TO_YCBCR).T
    return np.clip(np.floor(rgb + 0.5), 0, 255)[: image.shape[0], : image.shape[1]]


def test_tables_are_jpegs_at_every_quality_as_libjpeg_scales_them():
    np.testing.assert_array_equal(tcm.quantisation_tables(50)[0], tcm.LUMINANCE_TABLE)
    for quality in (10, 35, 90):
        buffer = io.BytesIO()
        PIL.Image.fromarray(_photo()).save(buffer, "JPEG", quality=quality, subsampling=0)
        luminance, chrominance = (
            np.asarray(table).reshape(8, 8)
            for table in PIL.Image.open(buffer).quantization.values()
        )
        tables = tcm.quantisation_tables(quality)
        np.testing.assert_array_equal(tables[0], luminance)
        np.testing.assert_array_equal(tables[1], chrominance)


@pytest.mark.parametrize("std", [0.0, 8.0, 40.0, 1e9])
def test_the_mask_keeps_blocks_whose_luminance_std_reaches_the_threshold(std):
    image = _photo(seed=1)
    luminance = _padded(image) @ TO_YCBCR[0]
    blocks = luminance.reshape(luminance.shape[0] // 8, 8, luminance.shape[1] // 8, 8)
    expected = blocks.std(axis=(1, 3)) >= std
    np.testing.assert_array_equal(tcm.keep_mask(image, std), expected)


@pytest.mark.parametrize(("low", "high", "std"), [(10, 90, 8.0), (30, 30, 0.0), (5, 75, 30.0)])
def test_compress_equals_the_block_by_block_reference(low, high, std):
    image = _photo(seed=2)
    ours = tcm.compress(image, low, high, std).numpy().astype(np.float64)
    expected = _reference(image, low, high, std)
    # float32 against float64: a value on a rounding edge may land one grey level apart
    assert np.abs(ours - expected).max() <= 1
    assert np.mean(ours != expected) < 0.002


def test_each_block_is_the_photo_compressed_at_the_quality_its_mask_chose():
    image = _photo(height=48, width=64, seed=3)
    keep = tcm.keep_mask(image, 8.0).numpy()
    assert keep.any() and not keep.all()
    mixed = tcm.compress(image, 10, 90, 8.0).numpy()
    low = tcm.compress(image, 10, 10, 8.0).numpy()
    high = tcm.compress(image, 90, 90, 8.0).numpy()
    per_pixel = np.repeat(np.repeat(keep, 8, 0), 8, 1)[..., None]
    np.testing.assert_array_equal(mixed, np.where(per_pixel, high, low))
    # the heavy compression is heavier
    assert np.abs(low.astype(int) - image).mean() > np.abs(high.astype(int) - image).mean()


def test_traced_with_unknown_sizes_it_gives_the_eager_pixels():
    traced = tf.function(
        lambda image: tcm.compress(image, 10, 90, 8.0),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )
    for height, width in ((8, 8), (9, 17), (37, 53)):
        image = _photo(height, width, seed=height)
        np.testing.assert_array_equal(traced(image), tcm.compress(image, 10, 90, 8.0))


def test_the_view_is_spelt_out_and_its_settings_are_checked():
    assert offline_config.view_list("hflip,tcm") == ("hflip", "tcm:10:90:8")
    assert offline_config.view_list("tcm:20:80:4.5") == ("tcm:20:80:4.5",)
    spec = views.ViewSpec.parse(("tcm:20:80:4.5",))
    assert spec.tcm == (20, 80, 4.5) and spec.names == ("tcm",) and spec.first_pass == 1
    for wrong in ("tcm:20", "tcm:0:80:4", "tcm:20:80:-1", "tcm:a:b:c"):
        with pytest.raises(ValueError):
            offline_config.view_list(wrong)


def test_the_mask_picture_tints_the_blocks_compressed_at_the_low_quality():
    image = _photo(height=48, width=64, seed=3)
    picture = tcm.mask_picture(image, 8.0)
    keep = np.repeat(np.repeat(tcm.keep_mask(image, 8.0).numpy(), 8, 0), 8, 1)
    np.testing.assert_array_equal(picture[keep], image[keep])
    assert np.all(picture[~keep][:, 2] >= 100)
