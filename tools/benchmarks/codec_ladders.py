"""What each codec's ladder costs: bytes of the re-encodings, their fidelity, and the time to build
the ladder's branches, codec beside codec on the same images.

For every image of a folder and every codec of --codecs (make-tfrecords --codecs), in turn image by
image so that the machine's drift touches every codec alike:
  - the bytes of each re-encoding (JPEG: libjpeg through TensorFlow, as the ladder encodes; the
    others: Pillow, as pipeline.offline.codecs encodes), as bits per pixel, and its PSNR against
    the photo;
  - the seconds to make the codec's branches for the CNN (encode, decode, resize), the work the
    offline stage adds per codec (the CNN's pass costs the same for any branch).
Prints one row per codec and quality, then each codec's ladder time and its ratio to JPEG's; --json
writes every number.

Run from the project root (about 25 min for imagenette-mini's 700 images on 2 quiet CPU cores;
--limit N takes the first N):
  PYTHONPATH=. python tools/benchmarks/codec_ladders.py ../shared/data/imagenette-mini \\
      --codecs jpeg,jpeg2000,webp,avif
"""

import argparse
import json
import time

import numpy as np
import tensorflow as tf

from pipeline.config import offline as offline_config
from pipeline.offline import codecs
from pipeline.offline import ladder
from tools.benchmarks import tcm_share

INPUT_SIZE = 224


def _jpeg(image: np.ndarray, quality: int) -> tuple[int, np.ndarray]:
    encoded = tf.io.encode_jpeg(image, quality=quality)
    return len(encoded.numpy()), tf.io.decode_jpeg(encoded, dct_method="INTEGER_ACCURATE").numpy()


def _psnr(image: np.ndarray, decoded: np.ndarray) -> float:
    error = np.mean((image.astype(np.float64) - decoded) ** 2)
    return float(10 * np.log10(255.0**2 / max(error, 1e-10)))


def _ladder_seconds(image: np.ndarray, codec: str, qualities) -> float:
    started = time.perf_counter()
    if codec == "jpeg":
        ladder.branch_images(image, INPUT_SIZE, qualities).numpy()
    else:
        codecs.coded_pixels(image, ((codec, qualities),), INPUT_SIZE)
    return time.perf_counter() - started


def measure(files, names, qualities) -> dict:
    sizes = {(codec, quality): [] for codec in names for quality in qualities}
    psnr = {key: [] for key in sizes}
    seconds = {codec: [] for codec in names}
    first = ladder.load_rgb(files[0])
    for codec in names:  # traces and library set-up outside the clock
        _ladder_seconds(first, codec, qualities)
    for path in files:
        image = ladder.load_rgb(path)
        for codec in names:
            seconds[codec].append(_ladder_seconds(image, codec, qualities))
            for quality in qualities:
                if codec == "jpeg":
                    size, decoded = _jpeg(image, quality)
                else:
                    data = codecs.encoded(image, codec, quality)
                    size, decoded = len(data), codecs.decoded(data)
                sizes[codec, quality].append(8 * size / (image.shape[0] * image.shape[1]))
                psnr[codec, quality].append(_psnr(image, decoded))
    return {
        "images": len(files),
        "bits_per_pixel": {f"{c}{q}": float(np.mean(v)) for (c, q), v in sizes.items()},
        "psnr_db": {f"{c}{q}": float(np.mean(v)) for (c, q), v in psnr.items()},
        "ladder_seconds_per_image": {codec: float(np.median(v)) for codec, v in seconds.items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("folder")
    parser.add_argument("--codecs", default="jpeg,jpeg2000,webp,avif")
    parser.add_argument("--qualities", default=",".join(map(str, offline_config.QUALITIES)))
    parser.add_argument("--limit", type=int, default=0, help="the first N images only")
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args(argv)
    names = offline_config.codec_list(args.codecs)
    codecs.check_available(names)
    qualities = offline_config.qualities_or_none(args.qualities)
    files = tcm_share.image_files(args.folder)[: args.limit or None]
    result = measure(files, names, qualities)
    print(f"{len(files)} images of {args.folder}; mean bits per pixel and PSNR per re-encoding")
    print("quality | " + " | ".join(f"{codec} bpp, dB" for codec in names))
    for quality in qualities:
        cells = [
            f"{result['bits_per_pixel'][f'{codec}{quality}']:.3f}, "
            f"{result['psnr_db'][f'{codec}{quality}']:.1f}"
            for codec in names
        ]
        print(f"{quality} | " + " | ".join(cells))
    jpeg = result["ladder_seconds_per_image"].get("jpeg")
    for codec, value in result["ladder_seconds_per_image"].items():
        ratio = f", {value / jpeg:.1f}x JPEG's" if jpeg else ""
        print(
            f"{codec}: {len(qualities)} branches in {1000 * value:.1f} ms per image (median){ratio}"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
