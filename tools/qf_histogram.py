"""Prints the JPEG quality-factor histogram of every file under a folder (--plot PNG to draw it)."""

import argparse
import json
import os
import sys

import tools


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("--plot", help="write the histogram as a PNG here")
    parser.add_argument("--json", help="write the counts as JSON here")
    flags = parser.parse_args(argv)
    from pipeline.offline import jpeg_quality

    def run(_):
        if not os.path.isdir(flags.directory):
            raise FileNotFoundError(f"{flags.directory}: no such directory")
        histogram = jpeg_quality.histogram_of_directory(flags.directory)
        print(histogram.text())
        if flags.plot:
            jpeg_quality.plot(histogram, flags.plot, os.path.basename(os.path.normpath(flags.directory)))
            print(f"plot: {flags.plot}")
        if flags.json:
            with open(flags.json, "w") as file:
                json.dump(histogram.to_json(), file, indent=2)

    return tools.run("qf_histogram", run, None)

if __name__ == "__main__":
    sys.exit(main())
