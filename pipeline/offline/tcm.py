"""A content-adaptive compression branch in the spirit of the Transparent Composite Model: smooth
8x8 blocks compressed heavily, blocks with edges kept.

Per 8x8 block of the photo (at its own resolution, as the ladder re-encodes it), JPEG's steps in
TensorFlow ops, so that the offline stage and the exported model make the same pixels:

    RGB -> YCbCr (JFIF), level shift by 128, 2-D DCT-II (orthonormal: JPEG's FDCT)
    a block is smooth when its luminance AC energy is below 64 * std^2: by Parseval the AC energy
        of an orthonormal DCT is 64 times the block's pixel variance, so `std` is the block's
        standard deviation in grey levels
    smooth blocks are quantised with JPEG's tables (Annex K, scaled as libjpeg scales them) at the
        low quality, the others at the high quality; every channel follows the luminance's choice
    inverse DCT, YCbCr -> RGB, rounded to uint8

Edges are padded by repeating the last row and column, as JPEG encoders do; chroma is not
subsampled (4:4:4), and the entropy coding JPEG adds is lossless, so it is left out.
"""

import numpy as np
import tensorflow as tf

BLOCK = 8
DEFAULT_LOW, DEFAULT_HIGH, DEFAULT_STD = 10, 90, 8.0

# ITU T.81 Annex K.1 and K.2, natural (row-major) order.
LUMINANCE_TABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)
CHROMINANCE_TABLE = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
    ]
    + [[99] * 8] * 4
)
# JFIF's RGB -> YCbCr (full range), and back.
_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_OFFSET = np.array([0.0, 128.0, 128.0])


def quantisation_tables(quality: int) -> np.ndarray:
    """[3, 8, 8] float32: the luminance table, then the chrominance one twice, at a JPEG quality
    (libjpeg's jpeg_quality_scaling: 5000 / q below 50, 200 - 2q from 50; entries in [1, 255])."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    tables = [
        np.clip((table * scale + 50) // 100, 1, 255)
        for table in (LUMINANCE_TABLE, CHROMINANCE_TABLE, CHROMINANCE_TABLE)
    ]
    return np.stack(tables).astype(np.float32)


def _dct(blocks, inverse: bool = False):
    """2-D orthonormal DCT-II (or its inverse, DCT-III) of [..., 8, 8] blocks."""
    kind = 3 if inverse else 2
    rows = tf.signal.dct(blocks, type=kind, norm="ortho")
    columns = tf.signal.dct(tf.linalg.matrix_transpose(rows), type=kind, norm="ortho")
    return tf.linalg.matrix_transpose(columns)


def _blocks(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 [H, W, 3] -> (YCbCr minus 128 as blocks [3, H/8, W/8, 8, 8] of the edge-padded photo,
    the photo's shape)."""
    image = tf.convert_to_tensor(image, tf.uint8)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    padded_height = (height + BLOCK - 1) // BLOCK * BLOCK
    padded_width = (width + BLOCK - 1) // BLOCK * BLOCK
    padded = tf.gather(image, tf.minimum(tf.range(padded_height), height - 1), axis=0)
    padded = tf.gather(padded, tf.minimum(tf.range(padded_width), width - 1), axis=1)
    ycbcr = tf.tensordot(tf.cast(padded, tf.float32), _TO_YCBCR.T.astype(np.float32), 1)
    ycbcr = ycbcr + (_OFFSET - 128.0).astype(np.float32)
    planes = tf.transpose(ycbcr, [2, 0, 1])
    blocks = tf.reshape(planes, [3, padded_height // BLOCK, BLOCK, padded_width // BLOCK, BLOCK])
    return tf.transpose(blocks, [0, 1, 3, 2, 4]), shape


def keep_mask(image: tf.Tensor, std: float = DEFAULT_STD) -> tf.Tensor:
    """bool [ceil(H/8), ceil(W/8)]: the blocks kept at the high quality (luminance AC energy of at
    least 64 * std^2)."""
    blocks, _ = _blocks(image)
    return _keep(_dct(blocks[0]), std)


def _keep(luminance_coefficients, std: float) -> tf.Tensor:
    energy = tf.reduce_sum(tf.square(luminance_coefficients), axis=[-2, -1])
    ac_energy = energy - tf.square(luminance_coefficients[..., 0, 0])
    return ac_energy >= BLOCK * BLOCK * float(std) ** 2


def compress(
    image: tf.Tensor, low: int = DEFAULT_LOW, high: int = DEFAULT_HIGH, std: float = DEFAULT_STD
) -> tf.Tensor:
    """uint8 [H, W, 3] -> uint8 [H, W, 3]: the photo with its smooth blocks quantised at quality
    `low` and the others at `high` (see the module docstring)."""
    blocks, shape = _blocks(image)
    coefficients = _dct(blocks)
    keep = _keep(coefficients[0], std)[None, :, :, None, None]
    tables = tf.where(
        keep,
        quantisation_tables(high)[:, None, None],
        quantisation_tables(low)[:, None, None],
    )
    scaled = coefficients / tables
    # JPEG rounds half away from zero (tf.round would round half to even).
    quantised = tf.sign(scaled) * tf.floor(tf.abs(scaled) + 0.5) * tables
    planes = _dct(quantised, inverse=True)
    rows = tf.shape(planes)[1]
    planes = tf.reshape(tf.transpose(planes, [0, 1, 3, 2, 4]), [3, rows * BLOCK, -1])
    ycbcr = tf.transpose(planes, [1, 2, 0]) + 128.0 - _OFFSET.astype(np.float32)
    rgb = tf.tensordot(ycbcr, np.linalg.inv(_TO_YCBCR).T.astype(np.float32), 1)
    rgb = tf.clip_by_value(tf.floor(rgb + 0.5), 0.0, 255.0)
    return tf.cast(rgb[: shape[0], : shape[1]], tf.uint8)


def mask_picture(image: tf.Tensor, std: float = DEFAULT_STD) -> np.ndarray:
    """uint8 [H, W, 3] for TensorBoard and the report: the photo, with the blocks compressed at the
    low quality darkened and tinted blue."""
    image = np.asarray(image, np.uint8)
    keep = np.asarray(keep_mask(image, std))
    per_pixel = np.repeat(np.repeat(keep, BLOCK, 0), BLOCK, 1)[: image.shape[0], : image.shape[1]]
    smooth = (image * 0.4 + np.array([0.0, 0.0, 100.0])).astype(np.uint8)
    return np.where(per_pixel[..., None], image, smooth)
