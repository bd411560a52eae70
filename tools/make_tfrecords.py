"""Command line of the offline stage: flags -> ExtractConfig -> pipeline.offline.extract.make_tfrecords."""

import argparse
import sys

import tools
from pipeline import config as config_lib


def parse_flags(argv=None) -> config_lib.ExtractConfig | str:
    """The job's config, or the records directory to check when --verify is given."""
    parser = argparse.ArgumentParser(
        description="Cache the bottlenecks of every image and its JPEG re-encodings in sharded TFRecords.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="root/<class>/* or root/train|val/<class>/*")
    source.add_argument("--labels-csv", help="CSV of file,label[,split]; files relative to the CSV")
    source.add_argument("--verify", metavar="OUT",
                        help="only check the shards of OUT against its manifest.json (exit 1 if any is bad)")
    parser.add_argument("--out-dir", help="where the shards and manifest.json go (required unless --verify)")
    parser.add_argument("--backbone", default="inception_v3",
                        help="inception_v3 | resnet50_v2 | mobilenet_v2, or an image feature vector model: "
                             "hub:HANDLE (TF-Hub or Kaggle Models, needs tensorflow_hub) | savedmodel:PATH (a TF2 "
                             "SavedModel), node pool only (default: %(default)s)")
    parser.add_argument("--weights", help="imagenet | PATH | none (default: imagenet; hub: and savedmodel: models "
                                          "carry their own)")
    parser.add_argument("--nodes", help="comma-separated node names (default: the backbone's training stages)")
    parser.add_argument("--qualities", default=",".join(map(str, config_lib.QUALITIES)),
                        help="JPEG qualities of branches 1.. (default: %(default)s)")
    parser.add_argument("--input-size", type=int,
                        help="CNN input size in px (default, or 0: the backbone's own; 224 for hub: and savedmodel:)")
    parser.add_argument("--input-range", metavar="LOW,HIGH",
                        help="pixel values a hub: or savedmodel: model expects (default: 0,1; e.g. -1,1)")
    parser.add_argument("--central-crop", type=float, default=1.0,
                        help="fraction of each side kept before resizing (default: %(default)s)")
    shard_size = parser.add_mutually_exclusive_group()
    shard_size.add_argument("--num-shards", type=int, help="shards in the largest split")
    shard_size.add_argument("--shard-size-mb", type=float, default=256.0,
                            help="target shard size per node (default: %(default)s)")
    parser.add_argument("--validation-percent", type=float, default=10.0,
                        help="share of the training images kept for validation, by a stable hash "
                             "(default: %(default)s)")
    parser.add_argument("--test-percent", type=float, default=10.0,
                        help="share of a flat root/<class>/* tree kept as the test split, by a stable hash; input "
                             "with its own held-out folder (val/ or test/) or CSV split uses that "
                             "(default: %(default)s)")
    parser.add_argument("--compression", default="", choices=["", "GZIP"])
    parser.add_argument("--storage-dtype", default=config_lib.STORAGE_DTYPES[0], choices=config_lib.STORAGE_DTYPES,
                        help="how activation values are stored: float32 is lossless; float16 and bfloat16 halve "
                             "their bytes, rounded to 11 and 8 significant bits, and are read back as float32 "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per CNN call (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random weights seed with --weights none")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--runner", default="local", choices=["local", "beam"],
                        help="local: this process; beam: Apache Beam, same output (default: %(default)s)")
    parser.add_argument("--beam-options", default="",
                        help='Beam pipeline options with --runner beam, e.g. "--runner=DataflowRunner '
                             '--project=P --region=R --temp_location=gs://B/tmp" (default: DirectRunner)')
    flags = parser.parse_args(argv)
    if flags.verify:
        return flags.verify
    if not flags.out_dir:
        parser.error("--out-dir is required")
    try:
        qualities = tuple(int(quality) for quality in flags.qualities.split(",") if quality.strip())
    except ValueError:
        parser.error(f"--qualities must be comma-separated integers, got {flags.qualities!r}")
    nodes = tuple(node.strip() for node in flags.nodes.split(",") if node.strip()) if flags.nodes else None
    try:
        input_range = tools.comma_separated(flags.input_range, float)
    except ValueError:
        parser.error(f"--input-range must be two numbers LOW,HIGH, got {flags.input_range!r}")
    try:
        return config_lib.ExtractConfig(
            out_dir=flags.out_dir, data_dir=flags.data_dir, labels_csv=flags.labels_csv,
            backbone=flags.backbone, weights=flags.weights, nodes=nodes, qualities=qualities,
            input_size=flags.input_size or None, input_range=input_range, central_crop=flags.central_crop,
            num_shards=flags.num_shards,
            shard_size_mb=flags.shard_size_mb, validation_percent=flags.validation_percent,
            test_percent=flags.test_percent,
            compression=flags.compression, storage_dtype=flags.storage_dtype, batch_size=flags.batch_size,
            seed=flags.seed,
            progress=not flags.no_progress, runner=flags.runner, beam_options=flags.beam_options)
    except ValueError as error:
        parser.error(str(error))


def main(argv=None) -> int:
    config = parse_flags(argv)
    if isinstance(config, str):
        return verify(config)
    # After flag parsing, so --help is instant; Beam only when asked for, as it is an optional extra.
    if config.runner == "beam":
        from pipeline.offline import beam as job
    else:
        from pipeline.offline import extract as job

    return tools.run("make_tfrecords", job.make_tfrecords, config, command="make-tfrecords", argv=argv)


def verify(records_dir: str, program: str = "make_tfrecords") -> int:
    """0 when every shard matches the manifest, 1 when some do not (each is named), 2 for a user error."""
    from pipeline.offline import extract

    reports = []
    status = tools.run(program, lambda directory: reports.append(extract.verify_output(directory)), records_dir)
    return status or (0 if reports[0].ok else 1)


if __name__ == "__main__":
    sys.exit(main())
