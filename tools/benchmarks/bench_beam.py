"""Benchmarks the offline stage on Beam's DirectRunner against the local runner on the same images.

Both runners extract the same real photos with the real MobileNetV2 weights into two output
directories, one after the other in this process (shared machines are noisy, so only figures from
one run compare). Reported: whether every shard file and the manifest (apart from the runner fields
of its config) are identical, and images/s of each, both while extracting (for Beam: pipeline
start-up, model loading on the worker and the job's first-batch encoding choice included) and end to
end.

Run from the project root (about 2-4 minutes on 2 CPU cores):
  PYTHONPATH=. python tools/benchmarks/bench_beam.py --out /tmp/bench_beam
"""

import argparse
import dataclasses
import filecmp
import json
import os
import shutil
import sys
import tempfile

from pipeline.config import offline as offline_config
from pipeline.offline import job

# tools/benchmarks/<this file> -> the project root
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")
DEFAULT_DATA_DIR = os.path.join(SHARED, "data", "imagenette-mini")
DEFAULT_WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")


def parse_flags(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="imagenette-mini: train/<wnid>/* (default: ../shared/data/imagenette-mini)",
    )
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="MobileNetV2 ImageNet weights file (default: ../shared/weights/ beside the project)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(tempfile.gettempdir(), "bench_beam"),
        help="working directory, recreated (default: %(default)s)",
    )
    parser.add_argument(
        "--num-images", type=int, default=40, help="training photos, round robin over classes"
    )
    parser.add_argument(
        "--num-shards", type=int, default=4, help="shards per node (default: %(default)s)"
    )
    parser.add_argument(
        "--beam-options",
        default="--runner=DirectRunner --direct_num_workers=1",
        help="Beam pipeline options (default: %(default)s)",
    )
    return parser.parse_args(argv)


def _link_images(data_dir: str, directory: str, count: int) -> None:
    """Symlinks count training photos, taking one class after another, into
    directory/train/<class>/."""
    train = os.path.join(data_dir, "train")
    if not os.path.isdir(train):
        raise FileNotFoundError(f"{train} is missing: pass --data-dir with train/<class>/ photos")
    classes = {
        name: sorted(os.listdir(os.path.join(train, name))) for name in sorted(os.listdir(train))
    }
    chosen = []
    for rank in range(max(len(names) for names in classes.values())):
        chosen.extend((name, names[rank]) for name, names in classes.items() if rank < len(names))
    if len(chosen) < count:
        raise ValueError(f"{train} holds {len(chosen)} photos, fewer than --num-images {count}")
    for class_name, file_name in chosen[:count]:
        os.makedirs(os.path.join(directory, "train", class_name), exist_ok=True)
        os.symlink(
            os.path.join(train, class_name, file_name),
            os.path.join(directory, "train", class_name, file_name),
        )


def _identical(local_dir: str, beam_dir: str) -> dict:
    """Compares every shard file byte for byte and the manifests apart from the runner fields."""
    manifests = []
    for directory in (local_dir, beam_dir):
        with open(os.path.join(directory, "manifest.json")) as file:
            manifest = json.load(file)
        for key in ("runner", "beam_options"):
            manifest["config"].pop(key)
        manifests.append(manifest)
    paths = [
        file["path"]
        for split in manifests[0]["splits"].values()
        for shard in split["shards"]
        for file in shard["files"].values()
    ]
    different = [
        path
        for path in paths
        if not filecmp.cmp(
            os.path.join(local_dir, path), os.path.join(beam_dir, path), shallow=False
        )
    ]
    return {
        "shard_files": len(paths),
        "different_files": different,
        "manifest_identical": manifests[0] == manifests[1],
        "records_identical": not different and manifests[0] == manifests[1],
    }


def main(argv=None) -> int:
    flags = parse_flags(argv)
    if not os.path.isfile(flags.weights):
        raise FileNotFoundError(f"--weights {flags.weights}: no such file")
    shutil.rmtree(flags.out, ignore_errors=True)
    images = os.path.join(flags.out, "images")
    _link_images(flags.data_dir, images, flags.num_images)
    local = offline_config.ExtractConfig(
        out_dir=os.path.join(flags.out, "local"),
        data_dir=images,
        backbone="mobilenet_v2",
        weights=flags.weights,
        num_shards=flags.num_shards,
        progress=False,
    )
    on_beam = dataclasses.replace(
        local,
        out_dir=os.path.join(flags.out, "beam"),
        runner="beam",
        beam_options=flags.beam_options,
    )
    summaries = {
        "local": job.make_tfrecords(local).summary,
        "beam": job.make_tfrecords(on_beam).summary,
    }
    figures = {
        "num_images": flags.num_images,
        "beam_options": flags.beam_options,
        **_identical(local.out_dir, on_beam.out_dir),
    }
    for runner, summary in summaries.items():
        figures[runner] = {
            "images_per_second_extracting": round(summary["images_per_second"], 3),
            "images_per_second_end_to_end": round(
                summary["images_processed"] / summary["seconds"], 3
            ),
            "seconds": round(summary["seconds"], 2),
        }
    figures["beam_over_local_extracting"] = round(
        figures["beam"]["images_per_second_extracting"]
        / figures["local"]["images_per_second_extracting"],
        3,
    )
    with open(os.path.join(flags.out, "bench_beam.json"), "w") as file:
        json.dump(figures, file, indent=2)
    print(json.dumps(figures, indent=2))
    print(
        f"bench_beam: records identical: {'yes' if figures['records_identical'] else 'no'}; "
        f"images/s while extracting: local {figures['local']['images_per_second_extracting']:.2f}, "
        f"Beam DirectRunner {figures['beam']['images_per_second_extracting']:.2f} "
        f"({figures['beam_over_local_extracting']:.2f}x)"
    )
    return 0 if figures["records_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
