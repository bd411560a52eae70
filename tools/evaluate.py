"""Evaluate a trained topology against its baseline, every branch alone, the oracle and the ensemble.

    evaluate --model LOGDIR/export --records RECORDS --out-dir OUT
    evaluate --model LOGDIR/export --data-dir DIR [--baseline BASELINE_LOGDIR] --out-dir OUT
writes OUT/evaluation.json and OUT/evaluation.md.
"""

import argparse
import sys

import tools


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="LOGDIR/export of the trained topology")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--records", help="make_tfrecords's --out-dir (evaluates its test split by default)")
    source.add_argument("--data-dir", help="raw images, root/<class>/* or root/train|val/<class>/*")
    source.add_argument("--labels-csv", help="raw images listed as file,label[,split]")
    parser.add_argument("--split", default="test", choices=["test", "validation", "train", "all"],
                        help="which images of the source to evaluate (default: %(default)s; records without a test "
                             "split fall back to validation, and the output says so)")
    parser.add_argument("--baseline", help="LOGDIR of a single-branch training (--branches 0), needed when "
                                           "the classes are not ImageNet's or the backbone is a hub: or "
                                           "savedmodel: model")
    parser.add_argument("--image-ids", default="", help="comma-separated image ids for per-image tables")
    parser.add_argument("--out-dir", required=True)
    flags = parser.parse_args(argv)
    from pipeline.analysis import evaluate
    from pipeline.training import export
    from pipeline.offline import images

    def run(_):
        split = flags.split
        if flags.records:
            split = evaluate.records_split(flags.records, split)
            predictions = evaluate.predictions_from_records(flags.model, flags.records, flags.baseline, split)
        else:
            description = export.ExportedClassifier(flags.model).description
            percents = (description["validation_percent"], description.get("test_percent", 0.0))
            index = (images.index_directory(flags.data_dir, *percents) if flags.data_dir
                     else images.index_csv(flags.labels_csv, *percents))
            if split == "test" and not index.split("test"):
                split = "validation"
            predictions = evaluate.predictions_from_images(flags.model, index, flags.baseline,
                                                           None if split == "all" else split)
        image_ids = [image_id for image_id in flags.image_ids.split(",") if image_id]
        result = evaluate.evaluate(predictions, image_ids, split)
        evaluate.write(result, flags.out_dir, f"Evaluation of {flags.model}")
        print(evaluate.markdown(result, f"Evaluation of {flags.model}").split("\n## ")[0])
        print(f"evaluate: wrote {flags.out_dir}/evaluation.json and evaluation.md")

    return tools.run("evaluate", run, None)


if __name__ == "__main__":
    sys.exit(main())
