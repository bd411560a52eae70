"""Checks every shard of a records directory against its manifest.json: record count, size and
sha256."""

import sys

from pipeline.config import offline as offline_config
from tools import flags
from tools import make_tfrecords


def main(argv=None) -> int:
    config = flags.parse(
        offline_config.VerifyConfig,
        argv,
        description=__doc__ + " Exit status 0: all good; 1: bad "
        "shards (each named; rerun make-tfrecords with the command that wrote RECORDS to rewrite "
        "only those); 2: no manifest or another user error.",
    )
    return make_tfrecords.verify(config, program="jpeg-ladder-verify")


if __name__ == "__main__":
    sys.exit(main())
