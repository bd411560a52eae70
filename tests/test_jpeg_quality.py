"""Quality-factor estimation from quantisation tables."""

import io
import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from pipeline.offline import jpeg_quality


def _jpeg(quality=None, **options):
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    if quality is not None:
        options["quality"] = quality
    PIL.Image.fromarray(pixels).save(buffer, "JPEG", **options)
    buffer.seek(0)
    with PIL.Image.open(buffer) as image:
        return image.quantization


@pytest.mark.parametrize("quality", [1, 10, 23, 49, 50, 51, 75, 90, 95, 100])
def test_pillow_and_tensorflow_jpegs_give_their_exact_quality(quality):
    assert jpeg_quality.estimate_tables(_jpeg(quality)) == jpeg_quality.Estimate(
        quality, "standard"
    )
    encoded = tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8), quality=quality).numpy()
    with PIL.Image.open(io.BytesIO(encoded)) as image:
        assert jpeg_quality.estimate_tables(image.quantization).quality == quality


def test_custom_tables_are_non_standard_with_the_nearest_quality():
    tables = {
        0: list(np.clip(jpeg_quality.ijg_tables(80)[0] + 1, 1, 255)),
        1: list(jpeg_quality.ijg_tables(80)[1]),
    }
    estimate = jpeg_quality.estimate_tables(_jpeg(qtables=tables))
    assert estimate.kind == jpeg_quality.NON_STANDARD and 78 <= estimate.quality <= 82


def test_directory_histogram_counts_odd_files_apart(tmp_path):
    pixels = PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    for quality in (30, 30, 90):
        pixels.save(tmp_path / f"q{quality}_{len(os.listdir(tmp_path))}.jpg", quality=quality)
    pixels.save(tmp_path / "lossless.jpg", format="PNG")
    (tmp_path / "notes.txt").write_text("hello")
    histogram = jpeg_quality.histogram_of_directory(str(tmp_path))
    assert dict(histogram.standard) == {30: 2, 90: 1}
    assert (histogram.not_jpeg, histogram.not_image, histogram.total) == (1, 1, 5)
    jpeg_quality.plot(histogram, str(tmp_path / "plot.png"), "test")
    assert (tmp_path / "plot.png").stat().st_size > 1000
