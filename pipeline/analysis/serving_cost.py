"""What an export costs at serving: its backbone passes per image, and the milliseconds per image
of its serving_default at batch 1 and batch 32, timed on encoded images as a client sends them."""

import math
import os
import time

import numpy as np
import tensorflow as tf

from pipeline import errors
from pipeline.offline import images
from pipeline.offline import ladder
from pipeline.training import export
from tfrecords import fileio
from tfrecords import manifest as manifest_lib

BATCH_SIZES = (1, 32)
TIMED_IMAGES = 64  # images timed at each batch size (at least one batch)


def device() -> str:
    """The device serving_default ran on, in words."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        return f"GPU ({details.get('device_name', gpus[0].name)})"
    return f"CPU ({os.cpu_count()} cores)"


def cost(export_dir: str, paths, batch_sizes=None, timed_images: int = TIMED_IMAGES) -> dict:
    """The export's serving cost at batch_sizes (BATCH_SIZES: 1 and 32), timed on the first
    timed_images image files of paths that it classifies, sent as a client sends them (their
    bytes; cycled to fill the batches):

        {"backbone_passes": 11,              per image: one per branch read, and the object's
                                             finding where it takes a pass of its own
         "ms_per_image": {"1": 41.0, "32": 18.2},
                                             wall time of serving_default per image, by batch size
         "images_per_second": {"1": 24.4, "32": 54.9},
         "timed_images": {"1": 64, "32": 64}, "images": 20 (the distinct ones),
         "device": "CPU (16 cores)"}

    Each batch size is timed after one untimed request of its size, which prepares the graph. The
    coded branches' pixels (WebP, ...), a client's work, are made before the clock starts.
    """
    classifier = export.ExportedClassifier(export_dir)
    images, coded = served_images(classifier, paths, timed_images)
    batch_sizes = BATCH_SIZES if batch_sizes is None else batch_sizes
    timings = {
        str(size): 1000.0 * seconds_per_image(classifier, images, coded, size, timed_images)
        for size in batch_sizes
    }
    return {
        "backbone_passes": classifier.serving["backbone_passes"],
        "ms_per_image": timings,
        "images_per_second": {size: 1000.0 / ms for size, ms in timings.items()},
        "timed_images": {str(size): _batches(timed_images, size) * size for size in batch_sizes},
        "images": len(images),
        "device": device(),
    }


def source_index(manifest: manifest_lib.Manifest) -> images.ImageIndex | None:
    """The records' images, where their source is still there to read."""
    source = manifest.config
    percents = (source.get("validation_percent", 10.0), source.get("test_percent", 0.0))
    try:
        if source.get("data_dir"):
            return images.index_directory(source["data_dir"], *percents)
        if source.get("labels_csv"):
            return images.index_csv(source["labels_csv"], *percents)
    except (OSError, errors.UserError):
        pass
    return None


def split_cost(export_dir: str, index, split: str, timed_images: int = TIMED_IMAGES) -> dict:
    """cost() on the images of one split of index ("all": every image): an evaluation's cost
    entry; a note where the images are not there (index None)."""
    if index is None:
        return {"note": "the records' images are not there to time serving_default on"}
    items = index.items if split == "all" else index.split(split)
    return cost(export_dir, [item.path for item in items], timed_images=timed_images)


def _batches(count: int, batch_size: int) -> int:
    return max(1, math.ceil(count / batch_size))


def seconds_per_image(classifier, images, coded, batch_size: int, count: int) -> float:
    """Wall seconds per image of serving_default over batches of batch_size, count images at least
    (images cycled), after one untimed request of that size, which prepares the graph."""
    rows = [
        [(batch * batch_size + row) % len(images) for row in range(batch_size)]
        for batch in range(_batches(count, batch_size))
    ]
    _call(classifier, images, coded, rows[0])
    started = time.perf_counter()
    for batch in rows:
        _call(classifier, images, coded, batch)
    return (time.perf_counter() - started) / (len(rows) * batch_size)


def served_images(classifier: export.ExportedClassifier, paths, count: int):
    """(bytes, coded pixels or None) of the first count files the export classifies: what a client
    sends it (the coded branches' pixels made from the offline stage's decoding)."""
    images, coded = [], []
    for path in paths:
        if len(images) >= count:
            break
        try:
            data = fileio.read_bytes(path)
            if classifier.serving["coded_branches"]:
                coded.append(classifier.coded_pixels(ladder.load_rgb(path)))
        except (OSError, tf.errors.OpError, ladder.BadImage):
            continue
        images.append(data)
    coded = np.asarray(coded, np.float32) if classifier.serving["coded_branches"] else None
    valid = np.flatnonzero(classifier.serve(images, coded)["valid"]) if images else []
    if not len(valid):
        raise errors.UserError(
            f"no image to time {classifier.export_dir}'s serving_default on: none of the "
            f"{len(images)} files read was classified"
        )
    return [images[row] for row in valid], None if coded is None else coded[valid]


def _call(classifier, images, coded, rows) -> None:
    classifier.serve([images[row] for row in rows], None if coded is None else coded[rows])
