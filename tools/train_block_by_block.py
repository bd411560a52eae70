"""Command line of the trainer: flags -> TrainConfig ->
pipeline.training.train.train_and_evaluate."""

import sys

import tools
from pipeline.config import training as training_config
from tools import flags


def parse_flags(argv=None) -> training_config.TrainConfig:
    return flags.parse(
        training_config.TrainConfig,
        argv,
        description="Train the multi-quality topology block by block "
        "on cached bottlenecks; rerun the same command to resume.",
    )


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.training import train  # after flag parsing, so --help is instant

    return tools.run(
        "train_block_by_block",
        train.train_and_evaluate,
        config,
        command="train-block-by-block",
        argv=argv,
        safe_point="after the step in progress",
    )


if __name__ == "__main__":
    sys.exit(main())
