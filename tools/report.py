"""Write the Markdown report with its plots from a training run and its evaluation.

report --logdir LOGDIR --evaluation OUT --out-dir REPORT
"""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def main(argv=None) -> int:
    config = flags.parse(
        analysis_config.ReportConfig, argv, description=__doc__, raw_description=True
    )
    from pipeline.analysis import report  # after flag parsing, so --help is instant

    return tools.run("report", report.run, config, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
