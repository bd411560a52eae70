"""Prints the JPEG quality-factor histogram of every file under a folder (--plot PNG to draw it)."""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def main(argv=None) -> int:
    config = flags.parse(analysis_config.HistogramConfig, argv, description=__doc__)
    from pipeline.offline import jpeg_quality  # after flag parsing, so --help is instant

    return tools.run("qf_histogram", jpeg_quality.run, config, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
