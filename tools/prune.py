"""Command line of pruning: flags -> PruneConfig -> pipeline.analysis.pruning.prune."""

import sys

import tools
from pipeline.config import analysis as analysis_config
from tools import flags


def parse_flags(argv=None) -> analysis_config.PruneConfig:
    return flags.parse(
        analysis_config.PruneConfig,
        argv,
        description="Prune an MLP head's hidden neurons by "
        "distinctiveness: prune, fine-tune with early stopping, repeat; writes pruning.json, "
        "pruning.md, pruning.png and TensorBoard scalars.",
    )


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.analysis import pruning  # after flag parsing, so --help is instant

    return tools.run("jpeg-ladder-prune", pruning.prune, config, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
