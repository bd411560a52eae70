"""What the offline benchmark (bench_offline) runs on and is held to: its backbone, input size and
split, the target of each figure, and its inputs, namely photos picked round-robin over the classes,
written as a labels CSV and prepared in memory as the job's branches, and fresh working directories.
"""

import collections
import csv
import os
import shutil

import numpy as np

from pipeline.offline import ladder

# tools/benchmarks/<this file> -> the project root
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKBONE = "mobilenet_v2"
INPUT_SIZE = 224
SPLIT = "train"  # the round-robin image selection below takes training images first

SPEED_TARGET = 0.85
SPARSE_ZERO_FRACTION = 0.70
SPARSE_STORAGE_TARGET = 0.45
DENSE_STORAGE_TARGET = 1.01
READER_TARGET = 20.0
MEMORY_GROWTH_TARGET = 1.20


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
