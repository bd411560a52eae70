"""Checks every shard of a records directory against its manifest.json: record count, size and sha256."""

import argparse
import sys

from tools import make_tfrecords


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__ + " Exit status 0: all good; 1: bad shards (each named; rerun make-tfrecords with "
        "the command that wrote RECORDS to rewrite only those); 2: no manifest or another user error.")
    parser.add_argument("records", metavar="RECORDS", help="the --out-dir of make-tfrecords")
    flags = parser.parse_args(argv)
    return make_tfrecords.verify(flags.records, program="jpeg-ladder-verify")


if __name__ == "__main__":
    sys.exit(main())
