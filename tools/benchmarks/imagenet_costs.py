"""ImageNet on paper's measurements: on a few real photos, per backbone, the CPU seconds of the
ladder, of the CNN pass and of serializing the records, and the stored bytes and zero fractions of
each cached node, as the offline stage itself (its job, BatchForward, serialize_batch) produces
them."""

import csv
import dataclasses
import math
import os
import resource
import shutil
import time

import numpy as np
import tensorflow as tf

from bottlenecks import cut
from bottlenecks import registry
from pipeline import backbones
from pipeline.config import offline as offline_config
from pipeline.offline import images as images_lib
from pipeline.offline import job
from pipeline.offline import ladder
from pipeline.offline import shard_work
from tfrecords import manifest as manifest_lib
from tfrecords import reader
from tools.benchmarks import imagenet_projection

# The nodes to cache per backbone: the training stages (the thesis's, for Inception V3 and ResNet-50
# V2) and, for MobileNetV2, one mostly-zero expansion ReLU beside its dense block outputs.
NODES = {
    "mobilenet_v2": ("pool", "block_16_project_BN", "block_15_add", "block_13_expand_relu"),
    "inception_v3": ("pool", "mixed9", "mixed8", "mixed7"),
    "resnet50_v2": ("pool", "conv4_block6_out"),
}
# The nodes whose zeros the thesis's range covers, surveyed on a few images to set beside it.
SURVEY_NODES = {"inception_v3": tuple(f"mixed{index}" for index in range(1, 10))}


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
        "imagenet_images": imagenet_projection.IMAGENET_IMAGES,
        "branches": 1 + len(offline_config.QUALITIES),
        "results": results,
        "wall_seconds": time.perf_counter() - started_wall,
        "cpu_seconds": time.process_time() - started_cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
