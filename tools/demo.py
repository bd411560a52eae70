"""The demo: make a small synthetic dataset offline and run the offline stage on it.

    jpeg-ladder-demo --out-dir demo            # random weights: runs anywhere, no download
    jpeg-ladder-demo --data-dir DIR --weights imagenet --backbone inception_v3 --out-dir demo
"""

import argparse
import os
import sys

import tools
from pipeline import config as config_lib


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="demo", help="where everything goes (default: %(default)s)")
    parser.add_argument("--data-dir", help="a real dataset (root/<class>/*) instead of the synthetic one")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", default="none", help="imagenet | PATH | none (default: %(default)s)")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--images-per-class", type=int, default=20, help="synthetic images per class")
    flags = parser.parse_args(argv)
    from pipeline import demo_data
    from pipeline import extract

    data_dir = flags.data_dir
    if data_dir is None:
        data_dir = os.path.join(flags.out_dir, "synthetic-shapes")
        print(f"demo: writing a SYNTHETIC dataset (coloured shapes, not real photos) to {data_dir}")
        demo_data.write_shapes_dataset(data_dir, per_class=flags.images_per_class)
    config = config_lib.ExtractConfig(
        out_dir=os.path.join(flags.out_dir, "records"), data_dir=data_dir, backbone=flags.backbone,
        weights=flags.weights, input_size=flags.input_size, num_shards=2, validation_percent=20)
    if tools.run("demo", extract.make_tfrecords, config):
        return 2
    print(f"demo: records and manifest.json are in {config.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
