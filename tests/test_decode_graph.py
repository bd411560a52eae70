"""The in-graph decoding of encoded images, held against the offline stage's Pillow decoding
image by image, eagerly and inside a tf.data map; and the bytes it refuses from their headers."""

import io
import os
import struct
import zlib

import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest
import tensorflow as tf

from pipeline.offline import decode_graph
from pipeline.offline import ladder
from tests import conftest


def _png_header(width: int, height: int) -> bytes:
    """A PNG's signature and header chunk alone (a valid CRC): its size, without pixels."""
    header = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + header
        + struct.pack(">I", zlib.crc32(header))
    )


def write_serving_inputs(directory: str) -> list[str]:
    """Every kind of file the offline stage reads that serving decodes, and the bad ones: conftest's
    odd inputs, then each EXIF orientation in JPEG, PNG and WebP, XMP orientation, alpha and
    transparency of every kind, 16-bit PNGs, BMPs, WebP (lossy, alpha, animated)."""
    conftest.write_odd_inputs(directory)
    conftest.write_more_odd_inputs(directory)
    rng = np.random.default_rng(3)
    rgb = PIL.Image.fromarray(rng.integers(0, 256, size=(20, 26, 3), dtype=np.uint8))
    alpha = PIL.Image.fromarray(rng.integers(0, 256, size=(20, 26), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(alpha)

    def save(name, image, **options):
        image.save(os.path.join(directory, name), **options)

    for orientation in range(1, 9):
        exif = PIL.Image.Exif()
        exif[0x0112] = orientation
        save(f"orientation{orientation}.jpg", rgb, quality=90, exif=exif)
        save(f"orientation{orientation}.png", rgb, exif=exif)
        save(f"orientation{orientation}.webp", rgb, quality=90, exif=exif)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    save("cmyk_rotated.jpg", rgb.convert("CMYK"), quality=90, exif=exif)
    # A big-endian EXIF block (as cameras of some makes write it): orientation 8.
    big_endian = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01"
    save(
        "big_endian_exif.jpg",
        rgb,
        quality=90,
        exif=big_endian + b"\x00\x08\x00\x00\x00\x00\x00\x00",
    )
    xmp = '<x:xmpmeta><rdf:Description tiff:Orientation="5"/></x:xmpmeta>'
    save("xmp_orientation.jpg", rgb, quality=90, xmp=xmp.encode())
    text = PIL.PngImagePlugin.PngInfo()
    text.add_itxt("XML:com.adobe.xmp", xmp)
    save("xmp_orientation.png", rgb, pnginfo=text)
    grey_alpha = rgb.convert("LA")
    grey_alpha.putalpha(alpha)
    save("grey_alpha.png", grey_alpha)
    save("palette_transparency.png", rgb.convert("P", colors=16), transparency=3)
    save("grey_transparency.png", rgb.convert("L"), transparency=7)  # Pillow ignores this one
    save("one_bit.png", rgb.convert("1"))
    for channels in (2, 3, 4):
        deep = rng.integers(0, 65536, size=(12, 14, channels)).astype(np.uint16)
        with open(os.path.join(directory, f"sixteen_bit_{channels}.png"), "wb") as file:
            file.write(tf.io.encode_png(deep).numpy())
    save("plain.gif", rgb.convert("P", colors=16))
    save("rgb.bmp", rgb)
    save("rgba.bmp", rgba)
    save("lossy.webp", rgb, quality=80)
    save("alpha.webp", rgba, quality=80)
    # An animation whose frames have colour tables of their own, the first a transparent colour.
    frames = [rgb.convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=8) for _ in range(3)]
    frames[1] = frames[1].transpose(PIL.Image.Transpose.ROTATE_180)
    frames[0].save(
        os.path.join(directory, "animated_transparent.gif"),
        save_all=True,
        append_images=frames[1:],
        transparency=2,
        disposal=2,
    )
    frames = [PIL.Image.fromarray(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)) for _ in "ab"]
    frames[0].save(
        os.path.join(directory, "animated.webp"), save_all=True, append_images=frames[1:]
    )
    return sorted(os.path.join(directory, name) for name in os.listdir(directory))


@pytest.fixture(scope="module")
def serving_inputs(tmp_path_factory):
    return write_serving_inputs(str(tmp_path_factory.mktemp("serving_inputs")))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def _decoded(data):
    """(pixels, reason) of one image through the graph's steps; raises where decoding fails."""
    format_code, reason = decode_graph.inspect(data)
    prepared = decode_graph.prepared(data, format_code)
    decode_graph.check(prepared, format_code)
    return decode_graph.decode(prepared, format_code), reason


def test_the_graph_decodes_as_the_offline_stage_image_by_image(serving_inputs):
    decodable = []
    for path in serving_inputs:
        data = open(path, "rb").read()
        try:
            expected = ladder.load_rgb(path)
        except ladder.BadImage:  # the offline stage quarantines it: serving refuses it too
            try:
                _, reason = _decoded(data)
            except tf.errors.InvalidArgumentError:
                continue  # its decoder fails
            assert reason.numpy(), path  # refused from its headers
            continue
        pixels, reason = _decoded(data)
        assert reason.numpy() == b"", path
        np.testing.assert_array_equal(pixels.numpy(), expected, err_msg=path)
        decodable.append((data, expected))
    assert len(decodable) >= 50
    # The same inside a tf.data map, where a serving graph's decoding runs.
    dataset = tf.data.Dataset.from_tensor_slices([data for data, _ in decodable]).map(
        lambda data: _decoded(data)[0]
    )
    for pixels, (_, expected) in zip(dataset, decodable):
        np.testing.assert_array_equal(pixels.numpy(), expected)


def test_bytes_serving_cannot_use_are_named_from_their_headers(tmp_path):
    rgb = PIL.Image.new("RGB", (9, 7), (10, 200, 30))
    cases = {}
    for name, options in {
        "photo.tiff": {},
        "palette.bmp": {"palette": True},
    }.items():
        image = rgb.convert("P") if options else rgb
        buffer = io.BytesIO()
        image.save(buffer, format=name.split(".")[1].upper())
        cases[name] = (buffer.getvalue(), decode_graph.UNDECODABLE)
    cases["bomb.png"] = (_png_header(20000, 20000), "decompression bomb")
    cases["wide.png"] = (_png_header(70000, 10), "too large to re-encode as JPEG")
    cases["empty.jpg"] = (b"", "empty")
    cases["text.jpg"] = (b"no image here", decode_graph.UNDECODABLE)
    for name, (data, fragment) in cases.items():
        _, reason = decode_graph.inspect(tf.constant(data))
        assert fragment in reason.numpy().decode(), name
    # The offline stage refuses the oversized ones from their headers too.
    for name in ("bomb.png", "wide.png"):
        (tmp_path / name).write_bytes(cases[name][0])
        with pytest.raises(ladder.BadImage):
            ladder.load_rgb(str(tmp_path / name))
