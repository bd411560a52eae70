"""The demo: a small dataset -> sharded multi-quality bottlenecks -> two training stages -> evaluation -> report.

    jpeg-ladder-demo --out-dir demo          # synthetic images, random weights: runs offline anywhere
    jpeg-ladder-demo --data-dir DIR --backbone inception_v3 --weights imagenet --out-dir demo
"""

import argparse
import sys

import tools


def main(argv=None) -> int:
    from pipeline.demo import run as demo

    defaults = demo.DemoConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=defaults.out_dir, help="where everything goes (default: %(default)s)")
    parser.add_argument("--data-dir", help="a real dataset (root/<class>/* or root/train|val/<class>/*) "
                                           "instead of the synthetic one")
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--weights", default=defaults.weights, help="imagenet | PATH | none (default: %(default)s)")
    parser.add_argument("--input-size", type=int, default=defaults.input_size,
                        help="CNN input size (default: %(default)s; 0 = the backbone's own)")
    parser.add_argument("--images-per-class", type=int, default=defaults.images_per_class)
    parser.add_argument("--max-epochs-per-stage", type=float, default=defaults.max_epochs_per_stage)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="of the first stage, then divided by 10 (default: %(default)s)")
    parser.add_argument("--head-init", choices=["random", "baseline"], default=defaults.head_init)
    parser.add_argument("--no-progress", action="store_true")
    flags = parser.parse_args(argv)
    config = demo.DemoConfig(
        out_dir=flags.out_dir, data_dir=flags.data_dir, backbone=flags.backbone, weights=flags.weights,
        input_size=flags.input_size or None, images_per_class=flags.images_per_class,
        max_epochs_per_stage=flags.max_epochs_per_stage, learning_rate=flags.learning_rate,
        head_init=flags.head_init,
        progress=not flags.no_progress)
    return tools.run("demo", demo.run_demo, config)


if __name__ == "__main__":
    sys.exit(main())
