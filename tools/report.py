"""Write the Markdown report with its plots from a training run and its evaluation.

    report --logdir LOGDIR --evaluation OUT --out-dir REPORT
"""

import argparse
import sys

import tools


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", required=True, help="the training run (its results.json)")
    parser.add_argument("--evaluation", help="evaluate's --out-dir (its evaluation.json)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--data-dir", help="images for the quality histogram (default: the records' source)")
    parser.add_argument("--bench", nargs="*", default=(), help="benchmark JSON files to include")
    flags = parser.parse_args(argv)
    from pipeline.analysis import report

    def run(_):
        report.build_report(flags.logdir, flags.evaluation, flags.out_dir, flags.data_dir, flags.bench)
        print(f"report: wrote {flags.out_dir}/report.md")

    return tools.run("report", run, None)


if __name__ == "__main__":
    sys.exit(main())
