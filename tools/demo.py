"""The demo: a small dataset -> sharded multi-quality bottlenecks -> two training stages ->
evaluation -> report.

jpeg-ladder-demo --out-dir demo          # synthetic images, random weights: runs offline anywhere
jpeg-ladder-demo --data-dir DIR --backbone inception_v3 --weights imagenet --out-dir demo
"""

import sys

import tools
from pipeline.config import demo as demo_config
from tools import flags


def main(argv=None) -> int:
    config = flags.parse(demo_config.DemoConfig, argv, description=__doc__, raw_description=True)
    from pipeline.demo import run as demo  # after flag parsing, so --help is instant

    return tools.run("demo", demo.run_demo, config, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
