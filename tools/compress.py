"""Command line of feature compression: flags -> CompressConfig -> pipeline.analysis.compression.compress."""

import argparse
import sys

import tools
from pipeline import config as config_lib


def parse_flags(argv=None) -> config_lib.CompressConfig:
    defaults = config_lib.CompressConfig(records_dir="", out_dir="")
    parser = argparse.ArgumentParser(description="Train an autoencoder on cached pooled features, prune its code "
                                                 "layer by distinctiveness, and report a classifier's accuracy "
                                                 "on the codes against the code size.")
    parser.add_argument("--records", required=True, help="make_tfrecords's --out-dir")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--node", default=defaults.node)
    parser.add_argument("--branches", default="0", help="comma-separated branches, concatenated (default: 0)")
    parser.add_argument("--code-size", type=int, default=defaults.code_size, help="starting code size")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="training before pruning")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--loss-threshold", type=float, default=defaults.loss_threshold,
                        help="prune while the validation reconstruction MSE stays under this (default: %(default)s)")
    parser.add_argument("--prune-every-epochs", type=int,
                        help="instead of the threshold: remove one code unit every N epochs")
    parser.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs)
    parser.add_argument("--min-code-size", type=int, default=defaults.min_code_size)
    parser.add_argument("--report-sizes", help="comma-separated code sizes at which to train a classifier too")
    parser.add_argument("--head", choices=["linear", "mlp"], default=defaults.head, help="the classifier")
    parser.add_argument("--hidden-units", type=int, default=defaults.hidden_units)
    parser.add_argument("--classifier-epochs", type=int, default=defaults.classifier_epochs)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--write-records", action="store_true",
                        help="write the final codes as records (node pool) under OUT/records")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")
    flags = parser.parse_args(argv)
    try:
        return config_lib.CompressConfig(
            records_dir=flags.records, out_dir=flags.out_dir, node=flags.node,
            branches=tools.comma_separated(flags.branches, int) or (),
            code_size=flags.code_size, epochs=flags.epochs, learning_rate=flags.learning_rate,
            batch_size=flags.batch_size, loss_threshold=flags.loss_threshold,
            prune_every_epochs=flags.prune_every_epochs, fine_tune_epochs=flags.fine_tune_epochs,
            min_code_size=flags.min_code_size, report_sizes=tools.comma_separated(flags.report_sizes, int) or (),
            head=flags.head,
            hidden_units=flags.hidden_units, classifier_epochs=flags.classifier_epochs, patience=flags.patience,
            write_records=flags.write_records, seed=flags.seed, progress=not flags.no_progress)
    except ValueError as error:
        parser.error(str(error))


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.analysis import compression  # after flag parsing, so --help is instant

    return tools.run("jpeg-ladder-compress", compression.compress, config)


if __name__ == "__main__":
    sys.exit(main())
