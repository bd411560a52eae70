"""Classify image files with an exported model: prints each image's top classes and probabilities."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="LOGDIR/export of a finished training")
    parser.add_argument("--top", type=int, default=5, help="classes to print per image (default: %(default)s)")
    parser.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    flags = parser.parse_args(argv)
    from pipeline.training import export
    from pipeline.offline import ladder

    try:
        classifier = export.ExportedClassifier(flags.model)
    except (FileNotFoundError, OSError) as error:
        print(f"predict: error: {error}", file=sys.stderr)
        return 2
    failures = 0
    for path in flags.images:
        try:
            probabilities = classifier.classify_file(path)
        except ladder.BadImage as error:
            print(f"{path}: skipped: {error}")
            failures += 1
            continue
        ranked = probabilities.argsort()[::-1][:flags.top]
        print(path)
        for rank, index in enumerate(ranked, 1):
            print(f"  {rank}. {classifier.class_names[index]}  {probabilities[index]:.4f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
