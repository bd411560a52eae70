"""Other codecs as ladders: JPEG 2000, WebP and AVIF re-encodings of the photo, beside JPEG's.

TensorFlow encodes JPEG alone, so these re-encodings are made with Pillow, in Python:
`coded_pixels` is the one function that makes their CNN inputs. The offline stage runs it inside
its tf.data map (`coded_pixels_op`, a py_function) and the exported model's reader
(pipeline.training.export.ExportedClassifier) runs it before feeding the SavedModel, so serving
sees the pixels training saw.

Each re-encoding happens at the photo's own resolution, as JPEG's ladder does, and is then resized
for the CNN by the ladder's own resize. What a quality means:

    webp, avif   Pillow's quality (libwebp's and libavif's 0..100 scale), 4:2:0 chroma
    jpeg2000     JPEG 2000 has no quality scale, so its quality q is JPEG's rate: the photo is coded
                 (OpenJPEG: YCbCr, irreversible 9/7 wavelet, one quality layer) at the compression
                 ratio libjpeg reaches on it at quality q, i.e. in the bytes the JPEG ladder's
                 branch q<q> costs. The two ladders then compare codecs at equal storage, image by
                 image.

Every encoder runs single-threaded and with fixed settings, so the bytes, and the records, do not
depend on the machine's cores.
"""

import io

import numpy as np
import PIL
import PIL.features
import PIL.Image
import tensorflow as tf

from pipeline import errors
from pipeline.offline import ladder

# The Pillow feature that encodes each codec (PIL.features.check).
PILLOW_FEATURES = {"jpeg2000": "jpg_2000", "webp": "webp", "avif": "avif"}


def check_available(codecs) -> None:
    """Fails in one line when this Pillow cannot encode one of the codecs."""
    missing = [
        codec
        for codec in codecs
        if codec in PILLOW_FEATURES and not PIL.features.check(PILLOW_FEATURES[codec])
    ]
    if missing:
        raise errors.UserError(
            f"--codecs {','.join(missing)}: Pillow {PIL.__version__} here cannot encode "
            f"{' or '.join(missing)}; install a Pillow whose wheel brings them "
            "(pip install 'pillow>=11.3' has OpenJPEG, libwebp and libavif), or leave them out"
        )


def encoded(image: np.ndarray, codec: str, quality: int) -> bytes:
    """The photo, uint8 [H, W, 3], in the codec's bytes at quality (fixed settings: the same bytes
    on every machine)."""
    picture = PIL.Image.fromarray(image)
    buffer = io.BytesIO()
    if codec == "webp":
        picture.save(buffer, "WEBP", quality=quality, method=4)
    elif codec == "avif":
        picture.save(buffer, "AVIF", quality=quality, speed=6, max_threads=1)
    elif codec == "jpeg2000":
        picture.save(
            buffer,
            "JPEG2000",
            quality_mode="rates",
            quality_layers=[jpeg_ratio(image, quality)],
            irreversible=True,
            mct=1,  # YCbCr first, as JPEG 2000 encoders do for colour (off in Pillow by default)
        )
    else:
        raise ValueError(f"no encoder for codec {codec!r}")
    return buffer.getvalue()


def jpeg_ratio(image: np.ndarray, quality: int) -> float:
    """The compression ratio (raw bytes to coded bytes) libjpeg reaches on the image at quality,
    encoding as the JPEG ladder does; at least 1."""
    coded = tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=int(quality))
    return max(1.0, image.size / len(coded.numpy()))


def decoded(data: bytes) -> np.ndarray:
    """Any codec's bytes -> RGB uint8 [H, W, 3]."""
    with PIL.Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.uint8)


def reencode(image: np.ndarray, codec: str, quality: int) -> np.ndarray:
    """uint8 [H, W, 3] -> the same photo through the codec at quality, decoded, uint8 [H, W, 3]."""
    return decoded(encoded(image, codec, int(quality)))


def coded_images(image: np.ndarray, codecs) -> np.ndarray:
    """uint8 [H, W, 3] -> every re-encoding of codecs ((codec, qualities), ...), in order, uint8
    [K, H, W, 3]."""
    image = np.asarray(image, np.uint8)
    coded = [reencode(image, codec, value) for codec, qualities in codecs for value in qualities]
    return np.stack(coded) if coded else np.zeros((0,) + image.shape, np.uint8)


def coded_pixels(image, codecs, input_size: int, central_crop: float = 1.0) -> np.ndarray:
    """One decoded photo, uint8 [H, W, 3] -> the CNN inputs of the codecs' branches ((codec,
    qualities), ...), in order, float32 [K, S, S, 3].

    Each re-encoding is resized as soon as it is decoded, so a large photo is never held K times.
    """
    image = np.asarray(image, np.uint8)
    pixels = [
        ladder.resize_for_backbone(
            tf.constant(reencode(image, codec, quality)[None]), input_size, central_crop
        ).numpy()
        for codec, qualities in codecs
        for quality in qualities
    ]
    if not pixels:
        return np.zeros((0, input_size, input_size, 3), np.float32)
    return np.concatenate(pixels, 0)


def coded_pixels_op(image: tf.Tensor, codecs, input_size: int, central_crop: float) -> tf.Tensor:
    """coded_pixels as a TensorFlow op (a py_function), for tf.data maps and tf.functions."""
    count = sum(len(qualities) for _, qualities in codecs)

    def make(photo):
        return coded_pixels(photo.numpy(), codecs, input_size, central_crop)

    pixels = tf.py_function(make, [image], tf.float32)
    pixels.set_shape([count, input_size, input_size, 3])
    return pixels
