"""Command line of feature compression: flags -> CompressConfig ->
pipeline.analysis.compression.compress."""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def parse_flags(argv=None) -> analysis_config.CompressConfig:
    return flags.parse(
        analysis_config.CompressConfig,
        argv,
        description="Train an autoencoder on cached pooled "
        "features, prune its code layer by distinctiveness, and report a classifier's accuracy on "
        "the codes against the code size.",
    )


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.analysis import compression  # after flag parsing, so --help is instant

    return tools.run("jpeg-ladder-compress", compression.compress, config, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
