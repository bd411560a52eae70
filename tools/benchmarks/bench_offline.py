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
import collections
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import loading
from bottlenecks import registry
from pipeline.config import offline as offline_config
from pipeline.offline import job
from pipeline.offline import ladder
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(PROJECT_ROOT, "..", "shared", "data", "imagenette-mini")
DEFAULT_WEIGHTS = os.path.join(
    PROJECT_ROOT, "..", "shared", "weights", "mobilenet_v2_1.0_224_imagenet.weights.h5"
)
BACKBONE = "mobilenet_v2"
INPUT_SIZE = 224
SPLIT = "train"  # the round-robin image selection below takes training images first

SPEED_TARGET = 0.85
SPARSE_ZERO_FRACTION = 0.70
SPARSE_STORAGE_TARGET = 0.45
DENSE_STORAGE_TARGET = 1.01
READER_TARGET = 20.0
MEMORY_GROWTH_TARGET = 1.20
READER_PASSES = 3

# Runs the job's real command line in a fresh interpreter, then reports that process's own peak RSS.
# VmHWM, not getrusage: Linux carries the parent's peak over into a spawned child's ru_maxrss (the
# memory image replaced at exec counts), so a child of this 4 GB benchmark would report 4 GB.
CHILD_JOB = """
import json, sys
from tools import make_tfrecords
status = make_tfrecords.main(sys.argv[1:])
with open("/proc/self/status") as file:
    peak_kib = next(int(line.split()[1]) for line in file if line.startswith("VmHWM:"))
print(json.dumps({"status": status, "peak_rss_kib": peak_kib}))
"""


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


# ------------------------------------------------------------------------------------------
# Inputs


def select_images(data_dir: str, count: int) -> list[dict]:
    """The first `count` images of a round-robin over the classes, so any prefix covers every
    class."""
    with open(os.path.join(data_dir, "labels.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    by_class = collections.defaultdict(list)
    for row in rows:
        by_class[row["wnid"]].append(row)
    for class_rows in by_class.values():  # training images first: the reader figure reads one split
        class_rows.sort(key=lambda row: (row["split"] != "train", row["file"]))
    ordered = [
        class_rows[rank]
        for rank in range(max(map(len, by_class.values())))
        for _, class_rows in sorted(by_class.items())
        if rank < len(class_rows)
    ]
    if count > len(ordered):
        raise ValueError(
            f"{data_dir} holds {len(ordered)} images, fewer than the {count} asked for"
        )
    return [
        {
            "path": os.path.abspath(os.path.join(data_dir, row["file"])),
            "label": row["wnid"],
            "split": row["split"],
        }
        for row in ordered[:count]
    ]


def write_labels_csv(images: list[dict], path: str) -> str:
    with open(path, "w", newline="") as file:
        csv_writer = csv.writer(file)
        csv_writer.writerow(["file", "label", "split"])
        csv_writer.writerows([image["path"], image["label"], image["split"]] for image in images)
    return path


def prepare_branches(images: list[dict], qualities) -> np.ndarray:
    """float32 [len(images) * branches, S, S, 3]: the CNN inputs the job would compute, ladder done
    up front."""
    return np.concatenate(
        [ladder.file_branch_pixels(image["path"], INPUT_SIZE, qualities) for image in images]
    )


def fresh_directory(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# ------------------------------------------------------------------------------------------
# (b, first) which nodes are mostly zeros on these photos


def survey_zero_fractions(
    model, backbone, pixels: np.ndarray, num_branches: int
) -> dict[str, float]:
    """Zero fraction of every catalogued post-ReLU node (and pool), one image's branches per call.

    Batch norm and residual-add nodes are linear and never sparse, so only ReLU outputs are
    surveyed; one image per call keeps the early 112x112 nodes from filling memory.
    """
    nodes = [node for node in backbone.nodes if node.endswith("relu") or node == registry.POOL]
    survey_model = cut.extractor(model, backbone, nodes)
    zeros = dict.fromkeys(nodes, 0)
    totals = dict.fromkeys(nodes, 0)
    for start in range(0, len(pixels), num_branches):
        outputs = survey_model(pixels[start : start + num_branches], training=False)
        for node in nodes:
            values = outputs[node].numpy()
            zeros[node] += values.size - np.count_nonzero(values)
            totals[node] += values.size
    return {node: zeros[node] / totals[node] for node in nodes}


# ------------------------------------------------------------------------------------------
# (a) the job versus bare predict


def predict_seconds(extractor, pixels: np.ndarray, batch_size: int, num_branches: int) -> float:
    started = time.perf_counter()
    extractor.predict(pixels, batch_size=batch_size * num_branches, verbose=0)
    return time.perf_counter() - started


def run_job(
    labels_csv: str, out_dir: str, weights: str, nodes, batch_size: int
) -> tuple[dict, float]:
    """make_tfrecords as users run it, timed around the whole call (model building included)."""
    config = offline_config.ExtractConfig(
        out_dir=out_dir,
        labels_csv=labels_csv,
        backbone=BACKBONE,
        weights=weights,
        nodes=tuple(nodes),
        input_size=INPUT_SIZE,
        batch_size=batch_size,
        progress=False,
    )
    started = time.perf_counter()
    summary = job.make_tfrecords(config)
    return summary, time.perf_counter() - started


def job_versus_predict(
    model,
    backbone,
    nodes,
    pixels: np.ndarray,
    labels_csv: str,
    records_dir: str,
    weights: str,
    batch_size: int,
    num_branches: int,
    rounds: int,
) -> dict:
    """Alternates bare predict and the job (P J P J ... P); see speed_ratios for how they are
    compared."""
    num_images = len(pixels) // num_branches
    extractor = cut.extractor(model, backbone, nodes)
    extractor.predict(
        pixels[: batch_size * num_branches], batch_size=batch_size * num_branches, verbose=0
    )  # traces once, as the job does before its first batch
    predict_runs = [predict_seconds(extractor, pixels, batch_size, num_branches)]
    job_runs = []
    for _ in range(rounds):
        print(f"(a) bare predict: {num_images / predict_runs[-1]:.2f} images/s", flush=True)
        summary, seconds = run_job(
            labels_csv, fresh_directory(records_dir), weights, nodes, batch_size
        )
        job_runs.append(
            {"seconds": seconds, "extracting_seconds": summary.get("extracting_seconds") or 0.0}
        )
        print(f"(a) make_tfrecords: {num_images / seconds:.2f} images/s", flush=True)
        predict_runs.append(predict_seconds(extractor, pixels, batch_size, num_branches))
    print(f"(a) bare predict: {num_images / predict_runs[-1]:.2f} images/s", flush=True)
    return {
        "images": num_images,
        "rounds": rounds,
        "job_runs": job_runs,
        "predict_seconds": predict_runs,
        **speed_ratios(num_images, predict_runs, job_runs),
        "target": SPEED_TARGET,
    }


def speed_ratios(num_images: int, predict_seconds: list, job_runs: list) -> dict:
    """Each job run against the faster of the two predict passes around it; the median over rounds.

    A slow spell on a shared machine can halve one pass; comparing with the faster neighbour keeps
    such a spell from flattering the job (it can only make the job look worse).
    """
    predict_rates = [num_images / seconds for seconds in predict_seconds]
    references = [
        max(predict_rates[index], predict_rates[index + 1]) for index in range(len(job_runs))
    ]
    job_rates = [num_images / run["seconds"] for run in job_runs]
    # The job's own clock of its extraction loop, without model building and tracing.
    extracting_rates = [
        num_images / run["extracting_seconds"] if run["extracting_seconds"] else None
        for run in job_runs
    ]
    ratios = [rate / reference for rate, reference in zip(job_rates, references)]
    result = {
        "job_images_per_second": float(np.median(job_rates)),
        "predict_images_per_second": float(np.median(references)),
        "ratio": float(np.median(ratios)),
        "ratios_per_round": ratios,
    }
    if all(extracting_rates):
        result["job_extracting_images_per_second"] = float(np.median(extracting_rates))
        result["extracting_ratio"] = float(
            np.median([rate / reference for rate, reference in zip(extracting_rates, references)])
        )
    return result


def storage_figures(records_dir: str) -> dict:
    """(b) per node, from the job's own manifest: stored bytes per image against raw float32."""
    figures = {}
    for node, entry in manifest_lib.Manifest.read(records_dir).to_json()["nodes"].items():
        ratio = entry["bytes_per_image"] / entry["float32_bytes_per_image"]
        target = (
            SPARSE_STORAGE_TARGET
            if entry["zero_fraction"] >= SPARSE_ZERO_FRACTION
            else DENSE_STORAGE_TARGET
        )
        figures[node] = {
            key: entry[key]
            for key in ("encoding", "zero_fraction", "bytes_per_image", "float32_bytes_per_image")
        }
        figures[node].update(ratio=ratio, target=target, passed=ratio <= target)
    return figures


# ------------------------------------------------------------------------------------------
# (c) the reader versus one .txt file per bottleneck


def reader_pass(records_dir: str, node: str, batch_size: int) -> tuple[int, float]:
    dataset = reader.make_dataset(manifest_lib.Manifest.read(records_dir), node, SPLIT, batch_size)
    started = time.perf_counter()
    count = 0
    for bottleneck, _ in dataset:
        count += int(bottleneck.shape[0])
    return count, time.perf_counter() - started


def write_txt_cache(records_dir: str, node: str, txt_dir: str) -> list[list[str]]:
    """retrain.py's cache: one file per image per branch, its floats joined by commas. Returns the
    paths."""
    fresh_directory(txt_dir)
    paths = []
    for bottlenecks, _ in reader.make_dataset(
        manifest_lib.Manifest.read(records_dir), node, SPLIT, 16
    ):
        for bottleneck in bottlenecks.numpy():
            image_paths = []
            for branch, values in enumerate(bottleneck):
                path = os.path.join(txt_dir, f"{len(paths):06d}_{branch:02d}.txt")
                with open(path, "w") as file:
                    # numpy's float32 -> str is the shortest exact text, as str(np.float32) in
                    # retrain.py.
                    file.write(",".join(values.reshape(-1).astype(str).tolist()))
                image_paths.append(path)
            paths.append(image_paths)
    return paths


def read_txt_image(image_paths: list[str], branch_shape) -> np.ndarray:
    branches = []
    for path in image_paths:
        with open(path) as file:
            text = file.read()
        branches.append(
            np.array([float(value) for value in text.split(",")], np.float32).reshape(branch_shape)
        )
    return np.stack(branches)


def reader_versus_txt(records_dir: str, node: str, txt_dir: str, batch_size: int) -> dict:
    shape = manifest_lib.Manifest.read(records_dir).node(node).shape
    reader_pass(
        records_dir, node, batch_size
    )  # warm-up: traces the parse function, fills the page cache
    # A pass over this split takes about a second, so one pass is at the mercy of a noisy neighbour:
    # the median of a few passes is the figure; the .txt pass below lasts long enough on its own.
    passes = [reader_pass(records_dir, node, batch_size) for _ in range(READER_PASSES)]
    num_examples = passes[0][0]
    reader_seconds = float(np.median([seconds for _, seconds in passes]))
    txt_paths = write_txt_cache(records_dir, node, txt_dir)
    first = next(
        iter(reader.make_dataset(manifest_lib.Manifest.read(records_dir), node, SPLIT, 1))
    )[0].numpy()[0]
    if not np.array_equal(read_txt_image(txt_paths[0], shape[1:]), first):
        raise RuntimeError(f"the .txt cache of {node} does not read back what the records hold")
    started = time.perf_counter()
    for image_paths in txt_paths:
        read_txt_image(image_paths, shape[1:])
    txt_seconds = time.perf_counter() - started
    txt_bytes = sum(os.path.getsize(path) for image_paths in txt_paths for path in image_paths)
    shutil.rmtree(txt_dir)
    reader_rate = num_examples / reader_seconds
    txt_rate = len(txt_paths) / txt_seconds
    print(
        f"(c) {node}: make_dataset {reader_rate:.1f} examples/s, .txt cache {txt_rate:.2f} "
        "examples/s",
        flush=True,
    )
    return {
        "node": node,
        "shape": shape,
        "examples": num_examples,
        "reader_examples_per_second": reader_rate,
        "txt_examples_per_second": txt_rate,
        "reader_examples_per_second_per_pass": [count / seconds for count, seconds in passes],
        "txt_files": len(txt_paths) * shape[0],
        "txt_bytes_per_image": txt_bytes / len(txt_paths),
        "ratio": reader_rate / txt_rate,
    }


# ------------------------------------------------------------------------------------------
# (d) peak memory in a fresh process


def job_peak_rss(labels_csv: str, out_dir: str, weights: str, nodes, batch_size: int) -> dict:
    fresh_directory(out_dir)
    command = [
        sys.executable,
        "-c",
        CHILD_JOB,
        "--labels-csv",
        labels_csv,
        "--out-dir",
        out_dir,
        "--backbone",
        BACKBONE,
        "--weights",
        weights,
        "--nodes",
        ",".join(nodes),
        "--input-size",
        str(INPUT_SIZE),
        "--batch-size",
        str(batch_size),
        "--no-progress",
    ]
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [PROJECT_ROOT]
            + [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
        ),
    )
    started = time.perf_counter()
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, cwd=PROJECT_ROOT
    )
    seconds = time.perf_counter() - started
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise RuntimeError(
            f"the job in a fresh process failed ({completed.returncode}):\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    result = json.loads(lines[-1])
    if result["status"] != 0:
        raise RuntimeError(
            f"make_tfrecords exited with {result['status']}:\n{completed.stderr[-4000:]}"
        )
    return {"peak_rss_mib": result["peak_rss_kib"] / 1024, "seconds": seconds}


def memory_figures(
    images: list[dict], out: str, weights: str, nodes, batch_size: int, count: int
) -> dict:
    """(d) the job's peak RSS on the first N and the first 4N images."""
    runs = []
    for num_images in (count, 4 * count):
        labels_csv = write_labels_csv(
            images[:num_images], os.path.join(out, f"bench_memory_{num_images}.csv")
        )
        run = job_peak_rss(
            labels_csv, os.path.join(out, f"bench_memory_{num_images}"), weights, nodes, batch_size
        )
        run["images"] = num_images
        print(
            f"(d) {num_images} images: peak RSS {run['peak_rss_mib']:.0f} MiB "
            f"({run['seconds']:.0f} s)",
            flush=True,
        )
        runs.append(run)
    return {
        "runs": runs,
        "ratio": runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"],
        "target": MEMORY_GROWTH_TARGET,
    }


# ------------------------------------------------------------------------------------------
# Report


def table_rows(speed: dict, storage: dict, reading: dict, memory: dict) -> list[dict]:
    predict_rate = speed["predict_images_per_second"]
    rows = [
        {
            "figure": "(a) make_tfrecords vs bare predict",
            "measured": f"{speed['job_images_per_second']:.2f} img/s",
            "reference": f"{predict_rate:.2f} img/s",
            "ratio": speed["ratio"],
            "target": f">= {SPEED_TARGET}",
            "pass": speed["ratio"] >= SPEED_TARGET,
        }
    ]
    if speed.get("job_extracting_images_per_second"):
        extracting_ratio = speed["extracting_ratio"]
        rows.append(
            {
                "figure": "(a) same, extraction loop only (no set-up)",
                "measured": f"{speed['job_extracting_images_per_second']:.2f} img/s",
                "reference": f"{predict_rate:.2f} img/s",
                "ratio": extracting_ratio,
                "target": f">= {SPEED_TARGET}",
                "pass": extracting_ratio >= SPEED_TARGET,
            }
        )
    for node, figures in storage.items():
        rows.append(
            {
                "figure": f"(b) {node} ({figures['encoding']}, "
                f"{100 * figures['zero_fraction']:.0f} % zeros)",
                "measured": f"{figures['bytes_per_image'] / 1024:.1f} KiB/img",
                "reference": f"{figures['float32_bytes_per_image'] / 1024:.1f} KiB/img",
                "ratio": figures["ratio"],
                "target": f"<= {figures['target']}",
                "pass": figures["passed"],
            }
        )
    for node, figures in reading.items():
        rows.append(
            {
                "figure": f"(c) make_dataset vs .txt cache, {node}",
                "measured": f"{figures['reader_examples_per_second']:.1f} ex/s",
                "reference": f"{figures['txt_examples_per_second']:.2f} ex/s",
                "ratio": figures["ratio"],
                "target": f">= {READER_TARGET:g}",
                "pass": figures["ratio"] >= READER_TARGET,
            }
        )
    small, large = memory["runs"]
    rows.append(
        {
            "figure": f"(d) peak RSS, {large['images']} vs {small['images']} images",
            "measured": f"{large['peak_rss_mib']:.0f} MiB",
            "reference": f"{small['peak_rss_mib']:.0f} MiB",
            "ratio": memory["ratio"],
            "target": f"<= {MEMORY_GROWTH_TARGET}",
            "pass": memory["ratio"] <= MEMORY_GROWTH_TARGET,
        }
    )
    return rows


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def print_table(rows: list[dict]) -> None:
    headers = ("figure", "measured", "reference", "ratio", "target", "")
    cells = [
        (
            row["figure"],
            row["measured"],
            row["reference"],
            f"{row['ratio']:.3f}",
            row["target"],
            verdict(row["pass"]),
        )
        for row in rows
    ]
    widths = [
        max(len(str(line[column])) for line in cells + [headers]) for column in range(len(headers))
    ]
    for line in [headers, tuple("-" * width for width in widths)] + cells:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())


def main(argv=None) -> int:
    flags = parse_flags(argv)
    started = time.perf_counter()
    out = os.path.abspath(flags.out)
    os.makedirs(out, exist_ok=True)
    json_path = flags.json or os.path.join(out, "bench_offline.json")
    backbone = registry.get_backbone(BACKBONE)
    qualities = offline_config.QUALITIES
    num_branches = 1 + len(qualities)
    dense_nodes = tuple(node.strip() for node in flags.dense_nodes.split(",") if node.strip())
    images = select_images(flags.data_dir, max(flags.num_images, 4 * flags.memory_images))
    speed_images = images[: flags.num_images]
    speed_csv = write_labels_csv(speed_images, os.path.join(out, "bench_images.csv"))

    print(
        f"bench_offline: {BACKBONE} at {INPUT_SIZE} px, {num_branches} branches, batch "
        f"{flags.batch_size} "
        f"images; preparing the branches of {len(speed_images)} images in memory",
        flush=True,
    )
    pixels = prepare_branches(speed_images, qualities)
    model = loading.build(backbone, flags.weights, INPUT_SIZE)

    survey = survey_zero_fractions(
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
    speed = job_versus_predict(
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

    storage = storage_figures(records_dir)

    # (c) on the sparse node (the reader's scatter path) and on each dense node (its plain path)
    reading = {
        node: reader_versus_txt(
            records_dir, node, os.path.join(out, "bench_txt_cache"), flags.reader_batch_size
        )
        for node in (sparse_node,) + tuple(node for node in dense_nodes if node in nodes)
    }
    memory = memory_figures(
        images, out, flags.weights, nodes, flags.batch_size, flags.memory_images
    )

    rows = table_rows(speed, storage, reading, memory)
    wall_seconds = time.perf_counter() - started
    print()
    print_table(rows)
    print(f"\nwall time {wall_seconds:.0f} s; figures in {json_path}")

    results = {
        "backbone": BACKBONE,
        "input_size": INPUT_SIZE,
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
