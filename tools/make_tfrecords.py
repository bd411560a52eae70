"""Command line of the offline stage: flags -> ExtractConfig ->
pipeline.offline.job.make_tfrecords."""

import sys

import tools
from pipeline.config import offline as offline_config
from tools import flags


def parse_flags(argv=None) -> offline_config.ExtractConfig | offline_config.VerifyConfig:
    """The job's config, or with --verify the check of a finished job's output."""
    parser = flags.Flags(
        "Cache the bottlenecks of every image and its JPEG re-encodings in sharded TFRecords."
    )
    parser.add(offline_config.ExtractConfig)
    # --verify OUT instead of a job: jpeg-ladder-verify's one option, in the group of the job's
    # sources.
    parser.add(offline_config.VerifyConfig, flags={"records_dir": "--verify"}, group="source")
    namespace = parser.parse(argv)
    if parser.given(namespace, offline_config.VerifyConfig):
        return parser.build(offline_config.VerifyConfig, namespace)
    return parser.build(offline_config.ExtractConfig, namespace)


def main(argv=None) -> int:
    config = parse_flags(argv)
    if isinstance(config, offline_config.VerifyConfig):
        return verify(config)
    from pipeline.offline import job  # after flag parsing, so --help is instant

    return tools.run(
        "make_tfrecords", job.make_tfrecords, config, command="make-tfrecords", argv=argv
    )


def verify(config: offline_config.VerifyConfig, program: str = "make_tfrecords") -> int:
    """0 when every shard matches the manifest, 1 when some do not (each is named), 2 for a user
    error."""
    from pipeline.offline import job

    return tools.run(
        program,
        lambda checked: job.verify_output(checked.records_dir),
        config,
        status=lambda report: 0 if report.ok else 1,
    )


if __name__ == "__main__":
    sys.exit(main())
