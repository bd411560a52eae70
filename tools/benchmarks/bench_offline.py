"""Benchmarks the offline stage on real photos and real MobileNetV2 weights, with targets.

Four figures, each compared with a reference measured in the same run (shared machines are noisy,
so only same-run ratios mean anything):
  (a) speed: make_tfrecords images/s end to end versus bare `model.predict` of the same frozen
      multi-output extractor over the same branch images prepared in memory (target >= 0.85);
  (b) storage: bytes per image per node versus raw float32 (target <= 0.45 at a node with >= 70 %
      zeros, <= 1.01 everywhere);
  (c) reading: examples/s of tfrecords.reader.make_dataset versus a one-.txt-file-per-bottleneck
  cache
      read back with Python, as TF's old retrain.py did (target >= 20x);
  (d) memory: peak resident memory of the job for N and 4N images, each in a fresh process
      (target: 4N within 20 % of N).

Run from the project root (about 5-10 minutes on 2 CPU cores):
  PYTHONPATH=. python tools/benchmarks/bench_offline.py --out /tmp/bench_offline
"""

import argparse
import os
import resource
import sys
import tempfile
import time

import tensorflow as tf

from bottlenecks import loading
from bottlenecks import registry
from pipeline.config import offline as offline_config
from tfrecords import fileio
from tools.benchmarks import offline_extraction
from tools.benchmarks import offline_memory
from tools.benchmarks import offline_reading
from tools.benchmarks import offline_report
from tools.benchmarks import offline_setup

SHARED = os.path.join(offline_setup.PROJECT_ROOT, "..", "shared")
DEFAULT_DATA_DIR = os.path.join(SHARED, "data", "imagenette-mini")
DEFAULT_WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")


def parse_flags(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="imagenette-mini: labels.csv with file,split,wnid,... "
        "(default: ../shared/data/imagenette-mini)",
    )
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="MobileNetV2 ImageNet weights file (default: ../shared/weights/ beside the project)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(tempfile.gettempdir(), "bench_offline"),
        help="working directory; its bench_* subdirectories are recreated (default: %(default)s)",
    )
    parser.add_argument("--json", help="where the figures go (default: OUT/bench_offline.json)")
    parser.add_argument(
        "--num-images",
        type=int,
        default=120,
        help="images for the speed, storage and reader figures (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-images",
        type=int,
        default=60,
        help="N of the memory figure, which also runs 4N (default: %(default)s)",
    )
    parser.add_argument(
        "--speed-rounds",
        type=int,
        default=2,
        help="job runs in the speed figure, each between two bare predicts (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per CNN call, times 11 branches (default: %(default)s)",
    )
    parser.add_argument(
        "--reader-batch-size",
        type=int,
        default=32,
        help="batch size of make_dataset in the reader figure (default: %(default)s)",
    )
    parser.add_argument(
        "--dense-nodes",
        default="block_15_add,block_16_project_BN",
        help="dense nodes stored beside the sparse one (default: %(default)s)",
    )
    parser.add_argument(
        "--sparse-node",
        help="a mostly-zero node (default: the catalogued node with the most zeros, measured "
        "first)",
    )
    parser.add_argument(
        "--survey-images",
        type=int,
        default=6,
        help="images whose 11 branches measure every node's zeros (default: %(default)s)",
    )
    flags = parser.parse_args(argv)
    if not os.path.isfile(flags.weights):
        parser.error(
            f"--weights {flags.weights}: no such file. This benchmark needs the real MobileNetV2 "
            f"ImageNet weights (../shared/weights/{os.path.basename(DEFAULT_WEIGHTS)} beside the "
            f"project, or pass --weights PATH)"
        )
    if not os.path.isfile(os.path.join(flags.data_dir, "labels.csv")):
        parser.error(
            f"--data-dir {flags.data_dir}: no labels.csv there (expected "
            "../shared/data/imagenette-mini)"
        )
    if (
        min(
            flags.num_images,
            flags.memory_images,
            flags.speed_rounds,
            flags.batch_size,
            flags.reader_batch_size,
            flags.survey_images,
        )
        < 1
    ):
        parser.error(
            "--num-images, --memory-images, --speed-rounds, --batch-size, --reader-batch-size "
            "and --survey-images must be at least 1"
        )
    return flags


def main(argv=None) -> int:
    flags = parse_flags(argv)
    started = time.perf_counter()
    out = os.path.abspath(flags.out)
    os.makedirs(out, exist_ok=True)
    json_path = flags.json or os.path.join(out, "bench_offline.json")
    backbone = registry.get_backbone(offline_setup.BACKBONE)
    qualities = offline_config.QUALITIES
    num_branches = 1 + len(qualities)
    dense_nodes = tuple(node.strip() for node in flags.dense_nodes.split(",") if node.strip())
    images = offline_setup.select_images(
        flags.data_dir, max(flags.num_images, 4 * flags.memory_images)
    )
    speed_images = images[: flags.num_images]
    speed_csv = offline_setup.write_labels_csv(speed_images, os.path.join(out, "bench_images.csv"))

    print(
        f"bench_offline: {offline_setup.BACKBONE} at {offline_setup.INPUT_SIZE} px, "
        f"{num_branches} branches, batch {flags.batch_size} "
        f"images; preparing the branches of {len(speed_images)} images in memory",
        flush=True,
    )
    pixels = offline_setup.prepare_branches(speed_images, qualities)
    model = loading.build(backbone, flags.weights, offline_setup.INPUT_SIZE)

    survey = offline_extraction.survey_zero_fractions(
        model, backbone, pixels[: flags.survey_images * num_branches], num_branches
    )
    sparse_node = flags.sparse_node or max(survey, key=survey.get)
    print(
        "zero fractions over the branches of {} images: {}".format(
            flags.survey_images,
            ", ".join(f"{node} {fraction:.2f}" for node, fraction in survey.items()),
        ),
        flush=True,
    )
    nodes = registry.check_nodes(
        backbone, set(backbone.default_stages) | set(dense_nodes) | {sparse_node}
    )
    print(f"nodes: {', '.join(nodes)} (mostly zeros: {sparse_node})", flush=True)

    records_dir = os.path.join(out, "bench_records")
    speed = offline_extraction.job_versus_predict(
        model,
        backbone,
        nodes,
        pixels,
        speed_csv,
        records_dir,
        flags.weights,
        flags.batch_size,
        num_branches,
        flags.speed_rounds,
    )
    del pixels, model

    storage = offline_extraction.storage_figures(records_dir)

    # (c) on the sparse node (the reader's scatter path) and on each dense node (its plain path)
    reading = {
        node: offline_reading.reader_versus_txt(
            records_dir, node, os.path.join(out, "bench_txt_cache"), flags.reader_batch_size
        )
        for node in (sparse_node,) + tuple(node for node in dense_nodes if node in nodes)
    }
    memory = offline_memory.memory_figures(
        images, out, flags.weights, nodes, flags.batch_size, flags.memory_images
    )

    rows = offline_report.table_rows(speed, storage, reading, memory)
    wall_seconds = time.perf_counter() - started
    print()
    offline_report.print_table(rows)
    print(f"\nwall time {wall_seconds:.0f} s; figures in {json_path}")

    results = {
        "backbone": offline_setup.BACKBONE,
        "input_size": offline_setup.INPUT_SIZE,
        "branches": num_branches,
        "batch_size": flags.batch_size,
        "weights": os.path.abspath(flags.weights),
        "data_dir": os.path.abspath(flags.data_dir),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "nodes": list(nodes),
        "sparse_node": sparse_node,
        "survey_zero_fractions": survey,
        "speed": speed,
        "storage": storage,
        "reader": reading,
        "memory": memory,
        "table": [
            {
                key: row[key]
                for key in ("figure", "measured", "reference", "ratio", "target", "pass")
            }
            for row in rows
        ],
        "all_pass": all(row["pass"] for row in rows),
        "wall_seconds": wall_seconds,
        "peak_rss_mib_of_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    fileio.write_json_atomic(json_path, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
