"""The 11-branch JPEG ladder: robust decoding of any image file, re-encoding, resizing for the CNN.

`branch_images` is the one function that turns a decoded image into the CNN's branch inputs: the
offline stage and the exported model both call it, so training and serving see identical pixels.
"""

import io

import numpy as np
import PIL.Image
import PIL.ImageOps
import tensorflow as tf

from pipeline.config import offline as offline_config
from tfrecords import fileio

MAX_SIDE = 65535  # JPEG's limit: the ladder could not re-encode a larger image


class BadImage(ValueError):
    """A file that cannot be used as an image; its message is the reason recorded in quarantine."""


def load_rgb(path: str) -> np.ndarray:
    """Decodes any image Pillow reads, by content not by name, into RGB uint8 [H, W, 3].

    CMYK, grayscale, 16-bit, palette and alpha images are converted; transparent pixels are
    composited over white; an EXIF orientation is applied (the photo comes out upright, as viewers
    show it); an animation gives its first frame. Raises BadImage for missing, empty, truncated,
    corrupt and non-image files.
    """
    try:
        data = fileio.read_bytes(path)
        if not data:
            raise BadImage("empty file (0 bytes)")
        with PIL.Image.open(io.BytesIO(data)) as image:
            if max(image.size) > MAX_SIDE:
                raise BadImage(
                    f"too large to re-encode as JPEG: {image.size[0]}x{image.size[1]} px "
                    f"(JPEG allows at most {MAX_SIDE} px a side)"
                )
            # decodes now (the first frame of an animation), so a truncated file fails here
            image.load()
            PIL.ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except BadImage:
        raise
    except (FileNotFoundError, tf.errors.NotFoundError):
        raise BadImage(
            "file not found: it was deleted or moved after the dataset was indexed"
        ) from None
    except tf.errors.PermissionDeniedError as error:
        raise BadImage(f"unreadable image: {error.message}") from None
    except PIL.UnidentifiedImageError:
        raise BadImage("not an image: no known image format in its content") from None
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise BadImage(f"unreadable image: {error}") from None


def _to_rgb(image: PIL.Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale, don't clip
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def jpeg_ladder(image: tf.Tensor, qualities=offline_config.QUALITIES) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 [1 + len(qualities), H, W, 3]: the original, then its re-encodings.

    Re-encoding happens at the image's own resolution, before any resizing.
    """
    image = tf.convert_to_tensor(image, dtype=tf.uint8)
    return tf.stack([image] + [_reencode(image, quality) for quality in qualities])


def resize_for_backbone(images: tf.Tensor, input_size: int, central_crop: float = 1.0) -> tf.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, S, S, 3] in [0, 255], cropped centrally then resized."""
    if central_crop < 1.0:
        images = tf.image.central_crop(images, central_crop)
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    # Resizing to the same size is the identity (bilinear with antialiasing is exact there), so
    # skip its cost, which is most of the ladder's for images already at the CNN's size.
    return tf.cond(
        tf.logical_and(tf.equal(height, input_size), tf.equal(width, input_size)),
        lambda: tf.cast(images, tf.float32),
        lambda: tf.image.resize(
            images, (input_size, input_size), method="bilinear", antialias=True
        ),
    )


def branch_images(
    image: tf.Tensor, input_size: int, qualities=offline_config.QUALITIES, central_crop: float = 1.0
) -> tf.Tensor:
    """One decoded image -> the CNN inputs of all its branches, float32 [1 + len(qualities), S, S,
    3].

    Equal to resize_for_backbone(jpeg_ladder(image)), but each re-encoding is resized as soon as it
    is decoded, so a large photo never holds eleven full-resolution copies in memory at once.
    """
    image = tf.convert_to_tensor(image, dtype=tf.uint8)
    branches = [image] + [_reencode(image, quality) for quality in qualities]
    return tf.concat(
        [resize_for_backbone(branch[None], input_size, central_crop) for branch in branches], 0
    )


def _reencode(image: tf.Tensor, quality: int) -> tf.Tensor:
    encoded = tf.io.encode_jpeg(image, quality=int(quality))
    # An explicit DCT method keeps decoding identical across builds and platforms.
    return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")


def file_branch_pixels(
    path: str, input_size: int, qualities=offline_config.QUALITIES, central_crop: float = 1.0
) -> np.ndarray:
    """An image file -> its branches' CNN inputs, float32 [1 + len(qualities), S, S, 3], as the
    offline stage makes them (raises BadImage for a file the offline stage would quarantine)."""
    return branch_images(tf.constant(load_rgb(path)), input_size, qualities, central_crop).numpy()
