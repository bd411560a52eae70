"""Evaluate a trained topology against its baseline, every branch alone, the oracle and the
ensemble.

    evaluate --model LOGDIR/export --records RECORDS --out-dir OUT
    evaluate --model LOGDIR/export --data-dir DIR [--baseline BASELINE_LOGDIR] --out-dir OUT
writes OUT/evaluation.json and OUT/evaluation.md.
"""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def main(argv=None) -> int:
    config = flags.parse(
        analysis_config.EvaluateConfig, argv, description=__doc__, raw_description=True
    )
    from pipeline.analysis import evaluate  # after flag parsing, so --help is instant

    return tools.run("evaluate", evaluate.run, config)


if __name__ == "__main__":
    sys.exit(main())
