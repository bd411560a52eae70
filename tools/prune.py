"""Command line of pruning: flags -> PruneConfig -> pipeline.analysis.pruning.prune."""

import argparse
import sys

import tools
from pipeline import config as config_lib


def parse_flags(argv=None) -> config_lib.PruneConfig:
    defaults = config_lib.PruneConfig(out_dir="", logdir="")
    parser = argparse.ArgumentParser(description="Prune an MLP head's hidden neurons by distinctiveness: prune, "
                                                 "fine-tune with early stopping, repeat; writes pruning.json, "
                                                 "pruning.md, pruning.png and TensorBoard scalars.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--logdir", help="a training run with an MLP head whose first stage reads pool")
    source.add_argument("--records", help="instead: train the starting MLP head here on these records' pool")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--method", choices=config_lib.PRUNE_METHODS, default=defaults.method)
    parser.add_argument("--similar-degrees", type=float, default=defaults.similar_degrees)
    parser.add_argument("--complementary-degrees", type=float, default=defaults.complementary_degrees)
    parser.add_argument("--complementary", choices=["both", "one"], default=defaults.complementary,
                        help="neurons removed from a complementary pair (default: %(default)s)")
    parser.add_argument("--merge", choices=["add", "scaled"], default=defaults.merge,
                        help="add: the papers' rule; scaled: least-squares scale and offset (default: %(default)s)")
    parser.add_argument("--steps-per-cycle", type=int, default=defaults.steps_per_cycle,
                        help="selections between two fine-tunings (default: %(default)s, as the papers)")
    parser.add_argument("--max-cycles", type=int)
    parser.add_argument("--min-neurons", type=int, default=defaults.min_neurons)
    parser.add_argument("--tolerance", type=float, default=defaults.tolerance,
                        help="validation top-1 drop (fraction) that marks the inflection (default: %(default)s)")
    parser.add_argument("--inflection-patience", type=int, default=defaults.inflection_patience,
                        help="cycles in a row below the tolerance that make the inflection (default: %(default)s)")
    parser.add_argument("--past-inflection", action="store_true", help="keep pruning after the inflection")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--momentum", type=float, default=defaults.momentum)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--branches", default="0", help="with --records: comma-separated branches, concatenated")
    parser.add_argument("--hidden-units", type=int, default=defaults.hidden_units, help="with --records")
    parser.add_argument("--activation", choices=["relu", "sigmoid"], default=defaults.activation, help="with --records")
    parser.add_argument("--dropout", type=float, default=defaults.dropout, help="with --records")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true")
    flags = parser.parse_args(argv)
    try:
        return config_lib.PruneConfig(
            out_dir=flags.out_dir, logdir=flags.logdir, records_dir=flags.records, method=flags.method,
            similar_degrees=flags.similar_degrees, complementary_degrees=flags.complementary_degrees,
            complementary=flags.complementary, merge=flags.merge, steps_per_cycle=flags.steps_per_cycle,
            max_cycles=flags.max_cycles, min_neurons=flags.min_neurons, tolerance=flags.tolerance,
            inflection_patience=flags.inflection_patience,
            stop_at_inflection=not flags.past_inflection, learning_rate=flags.learning_rate,
            momentum=flags.momentum, batch_size=flags.batch_size, max_epochs=flags.max_epochs,
            patience=flags.patience, branches=tools.comma_separated(flags.branches, int) or (),
            hidden_units=flags.hidden_units, activation=flags.activation, dropout=flags.dropout, seed=flags.seed,
            progress=not flags.no_progress)
    except ValueError as error:
        parser.error(str(error))


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.analysis import pruning  # after flag parsing, so --help is instant

    return tools.run("jpeg-ladder-prune", pruning.prune, config)


if __name__ == "__main__":
    sys.exit(main())
