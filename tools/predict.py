"""Classify image files with an exported model: prints each image's top classes and
probabilities."""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def main(argv=None) -> int:
    config = flags.parse(analysis_config.PredictConfig, argv, description=__doc__)
    from pipeline.training import predict  # after flag parsing, so --help is instant

    # Exit status 1 when some image could not be read (each is named), as before any other error.
    return tools.run(
        "predict", predict.predict_files, config, status=lambda skipped: 1 if skipped else 0
    )


if __name__ == "__main__":
    sys.exit(main())
