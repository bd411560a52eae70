"""ImageNet on paper: storage per node and offline wall time for ImageNet, from per-image costs
measured here.

On a few real ImageNet photos, per backbone:
  (a) storage: the offline stage itself (the job's make_tfrecords) caches the nodes; its manifest
  gives each
      node's encoding (sparse or dense, as the codec chooses), zero fraction and stored bytes per
      image (all branches in one record); the records, read back, give the zero fraction of each
      branch;
  (b) the CPU work per image that is not the CNN: the ladder (decode, 10 JPEG re-encodings and
  decodes at
      the photo's own size, 11 resizes to the input size, as the runners trace it) and serializing
      the records of the stored nodes (the job's serialize_batch with the job's encodings);
  (c) the CNN's CPU cost per branch (the job's BatchForward, the runners' forward pass), for
  reference and
      for CPU-only workers. No GPU is measured: the GPU's rate is a stated parameter.

Costs are CPU seconds of this process (time.process_time) with TensorFlow held to one thread, so
they are core-seconds that busy shared cores do not inflate. The projection for ImageNet (1,281,167
training + 50,000 validation images), N workers with K GPUs and C cores each, R branch passes/s per
GPU:

    wall = images x max(cpu_s / (N*C), 11 / (N*K*R))       cpu_s = ladder + serialization
    wall = images x (cpu_s + 11 * cnn_cpu_s) / (N*C)        K = 0: the CNN on the same cores

It assumes that the cores and the GPUs overlap perfectly, that the work scales linearly with
workers, cores and GPUs, and that reading photos and writing shards never wait on storage or
network.

Run from the project root (about 5-10 minutes on 2 busy cores):
  PYTHONPATH=. python -m tools.benchmarks.imagenet_on_paper --out /tmp/imagenet_on_paper
"""

import argparse
import csv
import dataclasses
import math
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

import tools
from bottlenecks import cut
from bottlenecks import registry
from pipeline import backbones
from pipeline.config import offline as offline_config
from pipeline.offline import images as images_lib
from pipeline.offline import job
from pipeline.offline import ladder
from pipeline.offline import shard_work
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(PROJECT_ROOT), "shared")
DEFAULT_DATA_DIR = os.path.join(SHARED, "data", "imagenet-val-100")
DEFAULT_WEIGHTS = os.path.join(SHARED, "weights", "mobilenet_v2_1.0_224_imagenet.weights.h5")

IMAGENET_IMAGES = {"train": 1_281_167, "validation": 50_000}
TERABYTE = 1e12

# The nodes to cache per backbone: the training stages (the thesis's, for Inception V3 and ResNet-50
# V2) and, for MobileNetV2, one mostly-zero expansion ReLU beside its dense block outputs.
NODES = {
    "mobilenet_v2": ("pool", "block_16_project_BN", "block_15_add", "block_13_expand_relu"),
    "inception_v3": ("pool", "mixed9", "mixed8", "mixed7"),
    "resnet50_v2": ("pool", "conv4_block6_out"),
}
# What the thesis reports of Inception V3's zeros: 53-90 % over mixed_1...mixed_9 and about 90 % at
# mixed7 (its per-node table is not at hand), as (low, high) per node.
THESIS_ZEROS = {
    "inception_v3": {"mixed7": (0.90, 0.90), "mixed8": (0.53, 0.90), "mixed9": (0.53, 0.90)}
}
# The nodes whose zeros the thesis's range covers, surveyed on a few images to set beside it.
SURVEY_NODES = {"inception_v3": tuple(f"mixed{index}" for index in range(1, 10))}
SPARSE_BYTES_PER_VALUE = 5  # float32 value + one-byte gap (fillers for gaps over 255 not counted)


@dataclasses.dataclass(frozen=True)
class Worker:
    """One Beam worker shape: GPUs (0: the CNN runs on the cores) and CPU cores."""

    workers: int
    gpus: int
    cores: int

    @classmethod
    def parse(cls, text: str) -> "Worker":
        try:
            workers, gpus, cores = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(
                f"--configs entry {text!r}: write workers x GPUs x cores, e.g. 16x1x8"
            ) from None
        if workers < 1 or gpus < 0 or cores < 1:
            raise ValueError(
                f"--configs entry {text!r}: needs at least 1 worker and 1 core, GPUs >= 0"
            )
        return cls(workers, gpus, cores)

    def label(self) -> str:
        return (
            f"{self.workers} x ({self.gpus} GPU, {self.cores} cores)"
            if self.gpus
            else f"{self.workers} x ({self.cores} cores, no GPU)"
        )


def parse_flags(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="photos with a labels.csv of file,imagenet_class_index,wnid,... "
        "(default: ../shared/data/imagenet-val-100)",
    )
    parser.add_argument(
        "--mobilenet-weights",
        default=DEFAULT_WEIGHTS,
        help="MobileNetV2 ImageNet weights file (default: ../shared/weights/ beside the project); "
        "Inception V3 and ResNet-50 V2 use random weights",
    )
    parser.add_argument(
        "--backbones",
        default="mobilenet_v2,inception_v3,resnet50_v2",
        help="backbones to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(tempfile.gettempdir(), "imagenet_on_paper"),
        help="working directory, recreated (default: %(default)s)",
    )
    parser.add_argument("--json", help="where the figures go (default: OUT/imagenet_on_paper.json)")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: print the tables from an earlier run's figures, projected with "
        "this run's --configs and --gpu-rates",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=20,
        help="photos cached per backbone and timed through the ladder (default: %(default)s)",
    )
    parser.add_argument(
        "--timing-images",
        type=int,
        default=8,
        help="photos whose CNN pass and serialization are timed (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="images per CNN call, times 11 branches (default: %(default)s)",
    )
    parser.add_argument(
        "--survey-images",
        type=int,
        default=2,
        help="photos whose branches survey the zeros of Inception's mixed1..mixed9 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--configs",
        default="1x1x8,1x1x32,16x1x8,50x1x8,50x0x8",
        help="workers x GPUs x cores per worker, comma-separated; 0 GPUs: the CNN on the cores "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--gpu-rates",
        default="1000,4000",
        help="assumed branch passes per second of one GPU, comma-separated: not measured here "
        "(default: %(default)s)",
    )
    flags = parser.parse_args(argv)
    flags.backbones = tools.comma_separated(flags.backbones) or ()
    unknown = [name for name in flags.backbones if name not in NODES]
    if unknown or not flags.backbones:
        parser.error(f"--backbones: choose among {', '.join(NODES)}")
    if flags.from_json:
        if not os.path.isfile(flags.from_json):
            parser.error(f"--from-json {flags.from_json}: no such file")
    elif "mobilenet_v2" in flags.backbones and not os.path.isfile(flags.mobilenet_weights):
        parser.error(
            f"--mobilenet-weights {flags.mobilenet_weights}: no such file (the real MobileNetV2 "
            f"ImageNet weights, ../shared/weights/{os.path.basename(DEFAULT_WEIGHTS)} beside the "
            "project)"
        )
    if not flags.from_json and not os.path.isfile(os.path.join(flags.data_dir, "labels.csv")):
        parser.error(
            f"--data-dir {flags.data_dir}: no labels.csv there (expected "
            "../shared/data/imagenet-val-100)"
        )
    if min(flags.num_images, flags.timing_images, flags.batch_size, flags.survey_images) < 1:
        parser.error(
            "--num-images, --timing-images, --batch-size and --survey-images must be at least 1"
        )
    if max(flags.timing_images, flags.survey_images) > flags.num_images:
        parser.error("--timing-images and --survey-images must not exceed --num-images")
    try:
        flags.configs = [Worker.parse(text) for text in tools.comma_separated(flags.configs) or ()]
        flags.gpu_rates = tools.comma_separated(flags.gpu_rates, float) or ()
    except ValueError as error:
        parser.error(str(error))
    if not flags.configs or not flags.gpu_rates or min(flags.gpu_rates) <= 0:
        parser.error("--configs and --gpu-rates need at least one entry each, rates above 0")
    return flags


# ------------------------------------------------------------------------------------------
# Inputs


def select_images(data_dir: str, count: int) -> list[images_lib.ImageItem]:
    """The first `count` photos of labels.csv, as the offline stage indexes them (label: the wnid's
    index)."""
    with open(os.path.join(data_dir, "labels.csv"), newline="") as file:
        rows = list(csv.DictReader(file))[:count]
    if len(rows) < count:
        raise ValueError(f"{data_dir} holds {len(rows)} images, fewer than the {count} asked for")
    wnids = sorted({row["wnid"] for row in rows})
    return [
        images_lib.ImageItem(
            path=os.path.abspath(os.path.join(data_dir, row["file"])),
            label=wnids.index(row["wnid"]),
            image_id=row["file"],
            split=images_lib.TRAIN,
        )
        for row in rows
    ]


def write_labels_csv(items, path: str) -> str:
    """The photos as --labels-csv rows of file,label (the label an integer class, no split
    column)."""
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([item.path, item.label] for item in items)
    return path


# ------------------------------------------------------------------------------------------
# Measurements


def ladder_costs(items, input_size: int, qualities, keep: int) -> tuple[dict, list[np.ndarray]]:
    """CPU seconds per image of decode + ladder + resize, and the branch pixels of the first `keep`
    images."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def branch_images(image):  # traced once, as both runners trace it
        return ladder.branch_images(image, input_size, qualities)

    branch_images(tf.constant(ladder.load_rgb(items[0].path))).numpy()  # trace outside the clock
    seconds, megapixels, kept = [], [], []
    for item in items:
        started = time.process_time()
        image = ladder.load_rgb(item.path)
        pixels = branch_images(tf.constant(image)).numpy()
        seconds.append(time.process_time() - started)
        megapixels.append(image.shape[0] * image.shape[1] / 1e6)
        if len(kept) < keep:
            kept.append(pixels)
    return {
        "ladder_cpu_s": float(np.mean(seconds)),
        "ladder_cpu_s_median": float(np.median(seconds)),
        "mean_megapixels": float(np.mean(megapixels)),
    }, kept


def cache_nodes(
    items, backbone_name: str, weights: str, nodes, input_size: int, work_dir: str
) -> dict:
    """Runs the offline stage on the photos; per node its manifest entry and per-branch zero
    fractions."""
    out_dir = os.path.join(work_dir, f"{backbone_name}_records")
    labels_csv = write_labels_csv(items, os.path.join(work_dir, f"{backbone_name}_images.csv"))
    config = offline_config.ExtractConfig(
        out_dir=out_dir,
        labels_csv=labels_csv,
        backbone=backbone_name,
        weights=weights,
        nodes=tuple(nodes),
        input_size=input_size,
        num_shards=1,
        progress=False,
    )
    started = time.perf_counter()
    job.make_tfrecords(config)
    job_seconds = time.perf_counter() - started
    manifest = manifest_lib.Manifest.read(out_dir)
    figures = {}
    for node, entry in manifest.to_json()["nodes"].items():
        zeros = np.zeros(entry["shape"][0])
        total = 0
        for split in manifest.splits:
            for bottlenecks, _ in reader.make_dataset(
                manifest_lib.Manifest.read(out_dir), node, split, batch_size=4
            ):
                values = bottlenecks.numpy()
                zeros += (values == 0).sum(
                    axis=tuple(axis for axis in range(values.ndim) if axis != 1)
                )
                total += values.size // values.shape[1]
        figures[node] = {
            key: entry[key]
            for key in (
                "shape",
                "encoding",
                "zero_fraction",
                "bytes_per_image",
                "float32_bytes_per_image",
            )
        }
        figures[node]["branch_zero_fractions"] = (zeros / total).tolist()
    return {"nodes": figures, "job_wall_s": job_seconds, "config": config}


def forward_costs(
    config, nodes, input_size: int, branch_pixels, batch_size: int, encodings: dict, items
) -> dict:
    """CPU seconds per branch of the CNN pass and per image of serializing its records."""
    backbone = registry.get_backbone(config.backbone)
    model = backbones.for_job(config, backbone, input_size)
    num_branches = branch_pixels[0].shape[0]
    forward = shard_work.BatchForward(
        backbone,
        model,
        shard_work.Extraction(
            dataclasses.replace(config, batch_size=batch_size), tuple(nodes), input_size
        ),
    )
    for slot, pixels in enumerate(branch_pixels[:batch_size]):
        forward.put(slot, pixels)
    forward.run(min(batch_size, len(branch_pixels)))  # traces once, outside the clock
    cnn_seconds = serialize_seconds = 0.0
    for start in range(0, len(branch_pixels), batch_size):
        batch = branch_pixels[start : start + batch_size]
        for slot, pixels in enumerate(batch):
            forward.put(slot, pixels)
        started = time.process_time()
        activations = forward.run(len(batch))
        cnn_seconds += time.process_time() - started
        started = time.process_time()
        shard_work.serialize_batch(
            items[start : start + len(batch)], activations, encodings, config.storage_dtype
        )
        serialize_seconds += time.process_time() - started
    # A padded last batch costs as much as a full one: count its padding as work done.
    passes = math.ceil(len(branch_pixels) / batch_size) * batch_size * num_branches
    return {
        "cnn_cpu_s_per_branch": cnn_seconds / passes,
        "serialize_cpu_s": serialize_seconds / len(branch_pixels),
        "model": model,
        "backbone": backbone,
    }


def survey_zeros(model, backbone, nodes, branch_pixels) -> dict:
    """Zero fraction per node over all branches of a few images, one image's branches per call."""
    extractor = cut.extractor(model, backbone, nodes)
    zeros = dict.fromkeys(nodes, 0)
    totals = dict.fromkeys(nodes, 0)
    for pixels in branch_pixels:
        outputs = extractor(pixels, training=False)
        for node in nodes:
            values = outputs[node].numpy()
            zeros[node] += values.size - np.count_nonzero(values)
            totals[node] += values.size
    return {node: zeros[node] / totals[node] for node in nodes}


def measure_backbone(name: str, flags, items, qualities) -> dict:
    backbone = registry.get_backbone(name)
    input_size = backbone.default_input_size
    weights = os.path.abspath(flags.mobilenet_weights) if name == "mobilenet_v2" else "none"
    nodes = registry.check_nodes(backbone, NODES[name])
    print(
        f"{name} ({'ImageNet' if weights != 'none' else 'random'} weights, {input_size} px): "
        f"the ladder of {len(items)} photos",
        flush=True,
    )
    ladder_figures, kept = ladder_costs(
        items, input_size, qualities, keep=max(flags.timing_images, flags.survey_images)
    )
    print(f"{name}: caching {', '.join(nodes)}", flush=True)
    cached = cache_nodes(items, name, weights, nodes, input_size, flags.out)
    encodings = {node: figures["encoding"] for node, figures in cached["nodes"].items()}
    print(f"{name}: timing the CNN and serialization on {flags.timing_images} photos", flush=True)
    forward = forward_costs(
        cached["config"],
        nodes,
        input_size,
        kept[: flags.timing_images],
        flags.batch_size,
        encodings,
        items[: flags.timing_images],
    )
    survey = {}
    if name in SURVEY_NODES:
        survey = survey_zeros(
            forward["model"], forward["backbone"], SURVEY_NODES[name], kept[: flags.survey_images]
        )
    return {
        "backbone": name,
        "weights": "ImageNet" if weights != "none" else "random",
        "input_size": input_size,
        **ladder_figures,
        "serialize_cpu_s": forward["serialize_cpu_s"],
        "cnn_cpu_s_per_branch": forward["cnn_cpu_s_per_branch"],
        "nodes": cached["nodes"],
        "survey_zero_fractions": survey,
        "job_wall_s": cached["job_wall_s"],
    }


# ------------------------------------------------------------------------------------------
# The projection (pure functions)


def imagenet_images() -> int:
    return sum(IMAGENET_IMAGES.values())


def storage_terabytes(bytes_per_image: float, images: int) -> float:
    return bytes_per_image * images / TERABYTE


def sparse_bytes_per_image(elements_per_image: int, zero_fraction: float) -> float:
    """The codec's payload at a given zero fraction: 5 bytes per non-zero (fillers not counted)."""
    return SPARSE_BYTES_PER_VALUE * (1 - zero_fraction) * elements_per_image


def wall_seconds(
    images: int,
    cpu_s: float,
    branches: int,
    worker: Worker,
    gpu_rate: float | None = None,
    cnn_cpu_s_per_branch: float | None = None,
) -> float:
    """images x max(cpu_s / (N*C), branches / (N*K*R)); with K = 0, the CNN shares the cores."""
    cores = worker.workers * worker.cores
    if worker.gpus == 0:
        return images * (cpu_s + branches * cnn_cpu_s_per_branch) / cores
    return images * max(cpu_s / cores, branches / (worker.workers * worker.gpus * gpu_rate))


def break_even_rate(cpu_s: float, branches: int, worker: Worker) -> float:
    """The GPU rate (branch passes/s) above which the cores, not the GPUs, set the wall time."""
    return branches * worker.cores / (worker.gpus * cpu_s)


# ------------------------------------------------------------------------------------------
# Tables


def duration(seconds: float) -> str:
    hours = seconds / 3600
    if hours >= 10:
        return f"{hours:.0f} h"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else "< 1 min"


def markdown(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def costs_table(results, num_images: int, timing_images: int, branches: int) -> str:
    rows = [
        (
            result["backbone"],
            f"{result['weights']}, {result['input_size']} px",
            f"{result['ladder_cpu_s'] * 1000:.0f}",
            f"{result['serialize_cpu_s'] * 1000:.0f}",
            f"{(result['ladder_cpu_s'] + result['serialize_cpu_s']) * 1000:.0f}",
            f"{result['cnn_cpu_s_per_branch'] * 1000:.0f}",
            f"{branches * result['cnn_cpu_s_per_branch']:.2f}",
        )
        for result in results
    ]
    return markdown(
        (
            "backbone",
            "weights, input",
            f"ladder ms/img ({num_images} photos)",
            f"serialize ms/img ({timing_images})",
            "cores' work ms/img",
            f"CNN ms/branch ({timing_images})",
            f"CNN s/img ({branches} branches)",
        ),
        rows,
    )


def storage_table(results, branches: int) -> str:
    images = imagenet_images()
    rows = []
    for result in results:
        for node, figures in result["nodes"].items():
            per_image = figures["bytes_per_image"]
            branch_zeros = figures["branch_zero_fractions"]
            shape = "x".join(map(str, figures["shape"][1:]))
            rows.append(
                (
                    f"{result['backbone']} ({result['weights']})",
                    node,
                    shape,
                    figures["encoding"],
                    f"{100 * figures['zero_fraction']:.1f} ({100 * branch_zeros[0]:.0f} / "
                    f"{100 * branch_zeros[1]:.0f})",
                    f"{per_image / branches / 1024:.1f}",
                    f"{per_image / 1024:.0f}",
                    f"{per_image / figures['float32_bytes_per_image']:.2f}",
                    f"{storage_terabytes(per_image, IMAGENET_IMAGES['train']):.3f}",
                    f"{storage_terabytes(per_image, images):.3f}",
                    thesis_storage(
                        THESIS_ZEROS.get(result["backbone"], {}).get(node), figures["shape"]
                    ),
                )
            )
    return markdown(
        (
            "backbone (weights)",
            "node",
            "shape",
            "stored",
            "zeros % (original / q10)",
            "KiB/img/branch",
            f"KiB/img ({branches} br.)",
            "x float32",
            "TB train",
            "TB train+val",
            "thesis's zeros -> TB train",
        ),
        rows,
    )


def thesis_storage(zeros, shape) -> str:
    """The codec's payload for the training set at the thesis's zero fraction (or range), or '-'."""
    if zeros is None:
        return "-"
    low, high = zeros
    most, least = (
        storage_terabytes(
            sparse_bytes_per_image(math.prod(shape), fraction), IMAGENET_IMAGES["train"]
        )
        for fraction in (low, high)
    )
    if low == high:
        return f"{100 * low:.0f} % -> {least:.2f}"
    return f"{100 * low:.0f}-{100 * high:.0f} % -> {least:.2f}-{most:.2f}"


def wall_table(results, configs, gpu_rates, branches: int) -> str:
    images = imagenet_images()
    rows = []
    for result in results:
        cpu_s = result["ladder_cpu_s"] + result["serialize_cpu_s"]
        stored_bytes = images * sum(
            figures["bytes_per_image"] for figures in result["nodes"].values()
        )
        for worker in configs:
            cores_alone = duration(images * cpu_s / (worker.workers * worker.cores))
            if worker.gpus == 0:
                wall = wall_seconds(
                    images,
                    cpu_s,
                    branches,
                    worker,
                    cnn_cpu_s_per_branch=result["cnn_cpu_s_per_branch"],
                )
                walls = [wall] * len(gpu_rates)
                cells = [f"{duration(wall)} (cores)"] * len(gpu_rates)
                rate = "-"
            else:
                walls, cells = [], []
                for gpu_rate in gpu_rates:
                    walls.append(wall_seconds(images, cpu_s, branches, worker, gpu_rate))
                    bound = (
                        "cores"
                        if cpu_s / worker.cores >= branches / (worker.gpus * gpu_rate)
                        else "GPUs"
                    )
                    cells.append(f"{duration(walls[-1])} ({bound})")
                rate = f"{break_even_rate(cpu_s, branches, worker):,.0f}"
            rows.append(
                (
                    result["backbone"],
                    worker.label(),
                    cores_alone,
                    *cells,
                    rate,
                    f"{stored_bytes / walls[-1] / 1e9:.1f}",
                )
            )
    return markdown(
        (
            "backbone",
            "N x (K GPUs, C cores)",
            "cores' work alone",
            *(f"wall, R = {rate:,.0f}/s per GPU" for rate in gpu_rates),
            "R at which the cores bind",
            f"GB/s written, R = {gpu_rates[-1]:,.0f}",
        ),
        rows,
    )


def survey_line(results) -> str:
    lines = []
    for result in results:
        survey = result["survey_zero_fractions"]
        if survey:
            values = [100 * fraction for fraction in survey.values()]
            nodes = list(survey)
            lines.append(
                f"{result['backbone']} ({result['weights']} weights): "
                f"{min(values):.0f}-{max(values):.0f} % "
                f"zeros over {nodes[0]}...{nodes[-1]}; the thesis, trained weights: 53-90 %.\n"
                "Per node, %: "
                + ", ".join(f"{node} {100 * value:.0f}" for node, value in survey.items())
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------


def measure(flags) -> dict:
    """Every backbone's figures, and how they were measured."""
    # One thread: per-image costs in core-seconds, which busy shared cores do not inflate.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    shutil.rmtree(flags.out, ignore_errors=True)
    os.makedirs(flags.out)
    items = select_images(flags.data_dir, flags.num_images)
    results = [
        measure_backbone(name, flags, items, offline_config.QUALITIES) for name in flags.backbones
    ]
    return {
        "data_dir": os.path.abspath(flags.data_dir),
        "num_images": flags.num_images,
        "timing_images": flags.timing_images,
        "batch_size": flags.batch_size,
        "threads": 1,
        "tensorflow": tf.__version__,
        "imagenet_images": IMAGENET_IMAGES,
        "branches": 1 + len(offline_config.QUALITIES),
        "results": results,
        "wall_seconds": time.perf_counter() - started_wall,
        "cpu_seconds": time.process_time() - started_cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def print_report(figures: dict, configs, gpu_rates) -> None:
    results, branches = figures["results"], figures["branches"]
    print(
        f"\n### Measured per-image costs (CPU seconds of one thread; {figures['num_images']} "
        "ImageNet "
        f"validation photos of {results[0]['mean_megapixels']:.2f} MP on average)\n"
    )
    print(costs_table(results, figures["num_images"], figures["timing_images"], branches))
    print(
        f"\n### Storage per node for ImageNet ({IMAGENET_IMAGES['train']:,} train + "
        f"{IMAGENET_IMAGES['validation']:,} validation images, {branches} branches, TB = 10^12 "
        "bytes)\n"
    )
    print(storage_table(results, branches))
    survey = survey_line(results)
    if survey:
        print(f"\n{survey}")
    print(
        f"\n### Offline wall time for ImageNet ({imagenet_images():,} images)\n\n"
        f"wall = images x max(cpu_s / (N*C), {branches} / (N*K*R)), cpu_s = ladder + serialize;\n"
        f"K = 0: wall = images x (cpu_s + {branches} x cnn_cpu_s) / (N*C). "
        f"R (branch passes/s per GPU) is assumed, not measured.\n"
    )
    print(wall_table(results, configs, gpu_rates, branches))


def main(argv=None) -> int:
    flags = parse_flags(argv)
    if flags.from_json:
        print_report(fileio.read_json(flags.from_json), flags.configs, flags.gpu_rates)
        return 0
    flags.out = os.path.abspath(flags.out)
    json_path = flags.json or os.path.join(flags.out, "imagenet_on_paper.json")
    figures = measure(flags)
    fileio.write_json_atomic(json_path, figures)
    print_report(figures, flags.configs, flags.gpu_rates)
    print(
        f"\nmeasuring took {figures['wall_seconds']:.0f} s wall, {figures['cpu_seconds']:.0f} s "
        "CPU; "
        f"figures in {json_path} (--from-json reprints them with other --configs and --gpu-rates)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
