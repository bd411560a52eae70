"""Does the JPEG ladder help on my data? The baseline and every fusion, trained by one rule, scored on test.

    jpeg-ladder-compare --records RECORDS --out-dir OUT [--fusions concat,shared,weighted,gated] [--seeds 3]
writes OUT/comparison.json, OUT/comparison.md and its plot, and every run under OUT/runs/<arm>/seed<k>.
Rerun the same command to resume.
"""

import argparse
import sys

import tools
from pipeline import config as config_lib


def parse_flags(argv=None) -> config_lib.CompareConfig:
    defaults = config_lib.CompareConfig(records_dir="", out_dir="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", required=True, help="make_tfrecords's --out-dir (with a test split)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--fusions", default=",".join(defaults.fusions),
                        help="fusions to compare with the baseline (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=defaults.seeds)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the first seed")
    parser.add_argument("--stages", default=",".join(defaults.stages),
                        help="the schedule every arm follows (default: %(default)s)")
    parser.add_argument("--head", choices=config_lib.HEADS, default=defaults.head)
    parser.add_argument("--hidden-units", type=int, default=defaults.hidden_units)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--label-space", choices=config_lib.LABEL_SPACES, default=defaults.label_space,
                        help="the heads' classes (see train-block-by-block --help; default: %(default)s)")
    parser.add_argument("--optimizer", choices=list(config_lib.SWEEP_RATES), default=defaults.optimizer)
    parser.add_argument("--learning-rates", help="the sweep's candidates (default: the optimizer's)")
    parser.add_argument("--sweep-epochs", type=float, default=defaults.sweep_epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--eval-every-steps", type=int, default=defaults.eval_every_steps)
    parser.add_argument("--plateau-epochs", type=float, default=defaults.plateau_epochs)
    parser.add_argument("--max-epochs-per-stage", type=float, default=defaults.max_epochs_per_stage)
    parser.add_argument("--no-progress", action="store_true")
    flags = parser.parse_args(argv)
    try:
        return config_lib.CompareConfig(
            records_dir=flags.records, out_dir=flags.out_dir, fusions=tools.comma_separated(flags.fusions) or (),
            seeds=flags.seeds, seed=flags.seed, stages=tools.comma_separated(flags.stages), head=flags.head,
            hidden_units=flags.hidden_units, dropout=flags.dropout, label_space=flags.label_space,
            optimizer=flags.optimizer,
            sweep_learning_rates=tools.comma_separated(flags.learning_rates, float), sweep_epochs=flags.sweep_epochs,
            batch_size=flags.batch_size, eval_every_steps=flags.eval_every_steps,
            plateau_epochs=flags.plateau_epochs, max_epochs_per_stage=flags.max_epochs_per_stage,
            progress=not flags.no_progress)
    except ValueError as error:
        parser.error(str(error))


def main(argv=None) -> int:
    config = parse_flags(argv)
    from pipeline.analysis import compare  # after flag parsing, so --help is instant

    return tools.run("compare", compare.compare, config, command="jpeg-ladder-compare", argv=argv,
                     safe_point="after the training step in progress")


if __name__ == "__main__":
    sys.exit(main())
