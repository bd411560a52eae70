"""Encoded image bytes -> RGB uint8 inside a TensorFlow graph, as the offline stage's Pillow
decoding (ladder.load_rgb) makes them: a SavedModel can hold neither Pillow nor a py_function.

    inspect(data) -> (format, reason)   never raises: the format read from the first bytes (a PNG
                                        called .jpg is a PNG) and, for bytes the offline stage
                                        would refuse from their headers alone, the reason
    prepared(data, format) -> bytes     never raises: what the format's decoder gets
    check(prepared, format)             raises (an op error) on corrupt or truncated data
    decode(prepared, format) -> uint8 [H, W, 3]
                                        raises only where check() does

JPEG, PNG, GIF (its first frame), BMP (24 and 32 bits a pixel, uncompressed) and WebP are decoded
as Pillow decodes them, pixel for pixel: JPEG with libjpeg's accurate integer DCT and fancy
upsampling (Pillow's settings, CMYK included); PNG's and WebP's alpha and a palette's transparency
composited over white with Pillow's integer arithmetic; 16-bit greyscale scaled as load_rgb scales
it; a GIF's transparent colour white. The EXIF orientation (or, without one, XMP's
tiff:Orientation) is read from a JPEG's APP1, a PNG's eXIf and uncompressed iTXt, a WebP's EXIF and
XMP chunks, and applied as PIL.ImageOps.exif_transpose applies it. docs/serving.md lists what
differs.
"""

import PIL.Image
import tensorflow as tf

from pipeline import traced
from pipeline.offline import image_headers as headers
from pipeline.offline import ladder

# Pillow's DecompressionBombError: above this many pixels the offline stage quarantines an image.
MAX_PIXELS = 2 * PIL.Image.MAX_IMAGE_PIXELS
# How a reason for bytes the graph has no decoder for begins: a client may convert them (to PNG).
UNDECODABLE = "a format serving does not decode"
BYTES, FORMAT = headers.BYTES, headers.FORMAT  # one image's bytes, its format


@traced.graph_function(BYTES)
def inspect(data) -> tuple[tf.Tensor, tf.Tensor]:
    """(format, reason) of one encoded image: reason is "" for bytes worth decoding, else why the
    offline stage would refuse them (or why serving cannot decode them in graph)."""
    data = tf.convert_to_tensor(data, tf.string)
    format_code = headers.image_format(data)
    width, height = headers.size(data, format_code)
    bits, compression, header = headers.bmp_layout(data)
    odd_bmp = tf.equal(format_code, headers.BMP) & (
        ~((tf.equal(bits, 24) | tf.equal(bits, 32)) & tf.equal(compression, 0)) | (header < 40)
    )
    pixels = width * height
    side = tf.maximum(width, height)
    reasons = [
        (tf.equal(tf.strings.length(data), 0), "empty (0 bytes)"),
        (
            tf.equal(format_code, headers.UNKNOWN),
            f"{UNDECODABLE}: no JPEG, PNG, GIF, BMP or WebP signature in its content",
        ),
        (
            odd_bmp,
            tf.strings.format(
                UNDECODABLE + ": a BMP of {} bits a pixel, compression {} (24- and 32-bit "
                "uncompressed BMP are decoded); send it as PNG",
                (bits, compression),
            ),
        ),
        (
            pixels > MAX_PIXELS,
            tf.strings.format(
                "unreadable image: {} pixels exceed the limit of {} pixels (a decompression bomb)",
                (pixels, MAX_PIXELS),
            ),
        ),
        (
            side > ladder.MAX_SIDE,
            tf.strings.format(
                "too large to re-encode as JPEG: {}x{} px (JPEG allows at most {} px a side)",
                (width, height, ladder.MAX_SIDE),
            ),
        ),
    ]
    reason = tf.constant("")
    for failed, text in reversed(reasons):  # the first failing check names the reason
        reason = tf.where(failed, text, reason)
    return format_code, reason


def _over_white(rgba) -> tf.Tensor:
    """RGBA uint8 over a white background, as PIL.Image.alpha_composite computes it (integer
    arithmetic, 7 fraction bits and its rounding division by 255)."""
    colour = tf.cast(rgba[..., :3], tf.int32)
    alpha = tf.cast(rgba[..., 3:], tf.int32)
    total = colour * alpha * 128 + 255 * (255 - alpha) * 128 + (0x80 << 7)
    shift = tf.bitwise.right_shift
    return tf.cast(shift(shift(shift(total, 8) + total, 8), 7), tf.uint8)


def orient(image, orientation) -> tf.Tensor:
    """An image [H, W, C] turned upright by its EXIF orientation (1-8), as exif_transpose does."""
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    branches = {
        2: lambda: tf.reverse(image, [1]),
        3: lambda: tf.reverse(image, [0, 1]),
        4: lambda: tf.reverse(image, [0]),
        5: transposed,
        6: lambda: tf.image.rot90(image, 3),
        7: lambda: tf.reverse(transposed(), [0, 1]),
        8: lambda: tf.image.rot90(image, 1),
    }
    cases = [(tf.equal(orientation, value), branch) for value, branch in branches.items()]
    return tf.case(cases, default=lambda: tf.identity(image))


@traced.graph_function(BYTES, FORMAT)
def prepared(data, format_code) -> tf.Tensor:
    """The bytes the format's decoder gets (never raises): an animated GIF or WebP cut after its
    first frame, the one Pillow reads (a GIF's transparent colour made opaque white, as Pillow
    composites it); any other image as it is."""
    data = tf.convert_to_tensor(data, tf.string)
    cut = {
        headers.GIF: lambda: headers.gif_first_frame(data),
        headers.WEBP: lambda: headers.webp_first_frame(data),
    }
    codes = range(len(headers.FORMAT_NAMES))
    return tf.switch_case(format_code, [cut.get(code, lambda: data) for code in codes])


def failure(format_code) -> tf.Tensor:
    """The reason for bytes whose decoder fails (check() raised)."""
    name = tf.gather(tf.constant(headers.FORMAT_NAMES), format_code)
    return tf.strings.join(["unreadable image: corrupt or truncated ", name, " data"])


def _decoders(data) -> dict:
    """Each format's TensorFlow decoder on prepared bytes: the one op of decoding that fails on
    corrupt or truncated data; decode() and check() run the same ones."""
    return {
        headers.JPEG: lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        headers.PNG: lambda: tf.io.decode_png(data, channels=4, dtype=tf.uint16),
        headers.GIF: lambda: tf.io.decode_gif(data),
        headers.BMP: lambda: tf.io.decode_bmp(data, channels=3),
        headers.WEBP: lambda: tf.io.decode_webp(data),
    }


@traced.graph_function(BYTES, FORMAT)
def check(data, format_code) -> tf.Tensor:
    """The decoded size of prepared bytes; raises (an op error) where decode() would. A small
    function for tf.data's ignore_errors, the graph's one way past a failing op."""
    decoders = _decoders(data)
    branches = [lambda: tf.constant(0, tf.int64)] + [
        lambda code=code: tf.size(decoders[code](), out_type=tf.int64)
        for code in (headers.JPEG, headers.PNG, headers.GIF, headers.BMP, headers.WEBP)
    ]
    return tf.switch_case(format_code, branches)


def _png(data) -> tf.Tensor:
    found = headers.png_headers(data)
    colour, depth = found["colour"], found["depth"]
    values = _decoders(data)[headers.PNG]()
    # Pillow keeps the high byte of 16-bit samples (8-bit ones come widened as v * 257, so their
    # high byte is v); load_rgb scales 16-bit greyscale (Pillow's I;16) instead.
    high = tf.cast(tf.bitwise.right_shift(values, tf.constant(8, tf.uint16)), tf.uint8)
    grey16 = tf.equal(colour, 0) & tf.equal(depth, 16)
    # Pillow composites alpha and a palette's transparency; it ignores greyscale and RGB tRNS.
    alpha = (
        tf.equal(colour, 4) | tf.equal(colour, 6) | (tf.equal(colour, 3) & found["transparency"])
    )

    def scaled():
        grey = tf.math.rint(tf.cast(values[..., :1], tf.float64) * (255.0 / 65535.0))
        return tf.tile(tf.cast(tf.clip_by_value(grey, 0, 255), tf.uint8), [1, 1, 3])

    image = tf.case(
        [(grey16, scaled), (alpha, lambda: _over_white(high))],
        default=lambda: high[..., :3],
    )
    return orient(image, found["orientation"])


def _webp(data) -> tf.Tensor:
    found = headers.webp_headers(data)
    # [H, W, 3 or 4], or an animation's [frames, H, W, 4]
    decoded = _decoders(data)[headers.WEBP]()
    first = tf.cond(tf.equal(tf.rank(decoded), 4), lambda: decoded[0], lambda: decoded)
    first = tf.ensure_shape(first, [None, None, None])
    has_alpha = tf.equal(tf.shape(first)[-1], 4)
    image = tf.cond(has_alpha, lambda: _over_white(first), lambda: first[..., :3])
    return orient(image, found["orientation"])


@traced.graph_function(BYTES, FORMAT)
def decode(data, format_code) -> tf.Tensor:
    """Prepared bytes of a known format -> RGB uint8 [H, W, 3], upright; raises (an op error) only
    where check() does."""
    data = tf.convert_to_tensor(data, tf.string)
    decoders = _decoders(data)

    def jpeg():
        return orient(decoders[headers.JPEG](), headers.jpeg_headers(data)["orientation"])

    branches = [
        lambda: tf.zeros([0, 0, 3], tf.uint8),
        jpeg,
        lambda: _png(data),
        lambda: decoders[headers.GIF]()[0],
        decoders[headers.BMP],
        lambda: _webp(data),
    ]
    return tf.switch_case(
        format_code, [lambda branch=branch: _rgb(branch()) for branch in branches]
    )


def _rgb(image) -> tf.Tensor:
    return tf.ensure_shape(tf.convert_to_tensor(image, tf.uint8), [None, None, 3])
