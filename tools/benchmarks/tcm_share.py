"""The share of 8x8 blocks the tcm view keeps at its high quality, over every image of some folders.

The view (make-tfrecords --views tcm:LOW:HIGH:STD) quantises a block at the high quality when its
luminance standard deviation reaches STD grey levels; this reports, per folder, the mean, median
and 10th-90th percentiles over images of the kept share, on the photo as the view sees it (no
central crop).

Run from the project root (under a minute for the shared folders on 2 CPU cores):
  PYTHONPATH=. python tools/benchmarks/tcm_share.py ../shared/data/imagenette-mini \\
      ../shared/data/imagenet-val-100 --std 8
"""

import argparse
import os

import numpy as np
import tensorflow as tf

from pipeline.config import offline as offline_config
from pipeline.offline import ladder
from pipeline.offline import tcm

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(directory, name)
        for directory, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )


def shares(files, std: float) -> np.ndarray:
    kept = tf.function(
        lambda image: tf.reduce_mean(tf.cast(tcm.keep_mask(image, std), tf.float32)),
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
    )
    return np.array([float(kept(ladder.load_rgb(path))) for path in files])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--std", type=float, default=offline_config.TCM_DEFAULTS[2])
    args = parser.parse_args(argv)
    for folder in args.folders:
        files = image_files(folder)
        values = 100 * shares(files, args.std)
        low, high = np.percentile(values, [10, 90])
        print(
            f"{os.path.basename(folder.rstrip('/'))}: {len(files)} images, blocks kept at the "
            f"high quality (std >= {args.std:g}): mean {values.mean():.1f} %, median "
            f"{np.median(values):.1f} %, 10th-90th percentile {low:.1f}-{high:.1f} %"
        )


if __name__ == "__main__":
    main()
