"""Command line of the trainer: flags -> TrainConfig -> pipeline.training.train.train_and_evaluate."""

import argparse
import sys

import tools
from pipeline import config as config_lib


def parse_flags(argv=None) -> config_lib.TrainConfig:
    defaults = config_lib.TrainConfig(records_dir="", logdir="")
    parser = argparse.ArgumentParser(description="Train the multi-quality topology block by block on cached "
                                                 "bottlenecks; rerun the same command to resume.")
    parser.add_argument("--records", required=True, help="make_tfrecords's --out-dir")
    parser.add_argument("--logdir", required=True, help="TensorBoard logs, checkpoints, results.json, export/")
    parser.add_argument("--stages", help="comma-separated nodes, one stage each (default: the backbone's "
                                         "schedule, e.g. pool,mixed9,mixed8,mixed7 for inception_v3)")
    parser.add_argument("--branches", help="comma-separated branch indices, 0 = original (default: all); "
                                           "--branches 0 trains the single-branch baseline")
    parser.add_argument("--fusion", choices=config_lib.FUSIONS, default=defaults.fusion,
                        help="how the decision layer combines the branches (default: %(default)s, the thesis)")
    parser.add_argument("--head", choices=config_lib.HEADS, default=defaults.head)
    parser.add_argument("--hidden-units", type=int, default=defaults.hidden_units, help="--head mlp")
    parser.add_argument("--activation", choices=["relu", "sigmoid"], default=defaults.activation, help="--head mlp")
    parser.add_argument("--dropout", type=float, default=defaults.dropout, help="--head mlp")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="global batch")
    parser.add_argument("--optimizer", choices=list(config_lib.SWEEP_RATES), default=defaults.optimizer)
    parser.add_argument("--learning-rate", default=str(defaults.learning_rate),
                        help="of the first stage, divided by 10 at each later stage; auto: the best on validation "
                             "of a short sweep (default: %(default)s)")
    parser.add_argument("--sweep-epochs", type=float, default=defaults.sweep_epochs,
                        help="length of each --learning-rate auto candidate (default: %(default)s)")
    parser.add_argument("--momentum", type=float, help="SGD momentum (default: 0 for sgd, 0.9 for momentum)")
    parser.add_argument("--eval-every-steps", type=int, default=defaults.eval_every_steps)
    parser.add_argument("--max-epochs-per-stage", type=float, default=defaults.max_epochs_per_stage)
    parser.add_argument("--plateau-epochs", type=float, default=defaults.plateau_epochs,
                        help="a stage ends when validation top-1 has not improved for this many epochs (a tie at a "
                             "lower loss replaces the best checkpoint without extending the stage)")
    parser.add_argument("--head-init", choices=["random", "baseline"], default=defaults.head_init)
    parser.add_argument("--imagenet-labels", action="store_true",
                        help="integer labels are ImageNet class indices (wnid folders are recognised anyway)")
    parser.add_argument("--label-space", choices=config_lib.LABEL_SPACES, default=defaults.label_space,
                        help="the head's classes: the backbone's 1000 ImageNet classes (imagenet), the dataset's "
                             "own (dataset), or auto: ImageNet's when the class folders are wnids (default)")
    parser.add_argument("--train-batchnorm", action="store_true",
                        help="update BatchNorm statistics in unfrozen blocks (default: inference mode)")
    parser.add_argument("--devices", help="comma-separated devices for MirroredStrategy (default: all GPUs, "
                                          "else the CPU)")
    parser.add_argument("--strategy", choices=config_lib.STRATEGIES, default=defaults.strategy,
                        help="mirrored: this machine's devices; multiworker: one process per machine of the "
                             "cluster in TF_CONFIG, each run with the same flags (default: %(default)s)")
    parser.add_argument("--collective-timeout", type=float, default=defaults.collective_timeout,
                        help="multiworker: seconds a worker waits for the others before the run stops "
                             "(default: %(default)s)")
    parser.add_argument("--input-sharding", choices=config_lib.INPUT_SHARDINGS, default=defaults.input_sharding,
                        help="multiworker: data: every worker reads every record and keeps its part of each batch "
                             "(the single-machine run); file: each worker reads only its own train shards; auto: "
                             "file when there are at least as many train shards as workers (default: %(default)s)")
    parser.add_argument("--cache-mb", type=float, default=defaults.cache_mb,
                        help="keep a split's decoded bottlenecks in memory when they fit in this many MiB "
                             "(default: %(default)s; 0 decodes every epoch)")
    parser.add_argument("--shuffle-buffer", type=int, default=defaults.shuffle_buffer,
                        help="examples in the training shuffle buffer, at most (default: %(default)s) ...")
    parser.add_argument("--shuffle-buffer-mb", type=float, default=defaults.shuffle_buffer_mb,
                        help="... and at most this many MiB of them (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--seeds", type=int, default=defaults.seeds,
                        help="independent runs (LOGDIR/seed<k>), reported as mean ± sd (default: %(default)s)")
    parser.add_argument("--no-export", action="store_true",
                        help="write no raw-image model into LOGDIR/export (sweeps, seeds, tests)")
    parser.add_argument("--no-progress", action="store_true")
    flags = parser.parse_args(argv)
    try:
        learning_rate = flags.learning_rate if flags.learning_rate == "auto" else float(flags.learning_rate)
    except ValueError:
        parser.error(f"--learning-rate must be a number or auto, got {flags.learning_rate!r}")
    try:
        return config_lib.TrainConfig(
            records_dir=flags.records, logdir=flags.logdir, stages=tools.comma_separated(flags.stages),
            branches=tools.comma_separated(flags.branches, int), fusion=flags.fusion, head=flags.head,
            hidden_units=flags.hidden_units, activation=flags.activation, dropout=flags.dropout,
            batch_size=flags.batch_size, optimizer=flags.optimizer, learning_rate=learning_rate,
            sweep_epochs=flags.sweep_epochs, seeds=flags.seeds,
            momentum=flags.momentum, eval_every_steps=flags.eval_every_steps,
            max_epochs_per_stage=flags.max_epochs_per_stage, plateau_epochs=flags.plateau_epochs,
            head_init=flags.head_init, imagenet_labels=flags.imagenet_labels, label_space=flags.label_space,
            train_batchnorm=flags.train_batchnorm, devices=tools.comma_separated(flags.devices),
            strategy=flags.strategy, collective_timeout=flags.collective_timeout,
            input_sharding=flags.input_sharding, cache_mb=flags.cache_mb, shuffle_buffer=flags.shuffle_buffer,
            shuffle_buffer_mb=flags.shuffle_buffer_mb, seed=flags.seed,
            export=not flags.no_export, progress=not flags.no_progress)
    except ValueError as error:
        parser.error(str(error))


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.training import train  # after flag parsing, so --help is instant

    return tools.run("train_block_by_block", train.train_and_evaluate, config, command="train-block-by-block",
                     argv=argv, safe_point="after the step in progress")


if __name__ == "__main__":
    sys.exit(main())
