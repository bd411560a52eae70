"""Which branches help on my data, and does the JPEG ladder? The baseline and every fusion (on every
--branch-sets set), trained by one rule, scored on test; the verdict names what won.

    jpeg-ladder-compare --records RECORDS --out-dir OUT [--fusions concat,shared,weighted,gated]
        [--branch-sets "ladder;original,object;ladder,object"] [--seeds 3]
writes OUT/comparison.json, OUT/comparison.md and its plot, and every run under
OUT/runs/<arm>/seed<k>. Linear layers are solved (--solver sgd trains them); every trainer option
(but those the protocol sets per arm) applies to every arm. Rerun the same command to resume.
"""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def parse_flags(argv=None) -> analysis_config.CompareConfig:
    return flags.parse(
        analysis_config.CompareConfig, argv, description=__doc__, raw_description=True
    )


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.analysis import compare  # after flag parsing, so --help is instant

    return tools.run(
        "compare",
        compare.compare,
        config,
        command="jpeg-ladder-compare",
        argv=argv,
        safe_point="after the training step in progress",
    )


if __name__ == "__main__":
    sys.exit(main())
