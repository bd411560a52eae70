"""The offline benchmark's figure (c): examples/s of tfrecords.reader.make_dataset against a cache
of one .txt file per image and branch, read back with Python as TF's old retrain.py did, on the
records the job wrote."""

import os
import shutil
import time

import numpy as np

from tfrecords import manifest as manifest_lib
from tfrecords import reader
from tools.benchmarks import offline_setup

READER_PASSES = 3


# ------------------------------------------------------------------------------------------
# (c) the reader versus one .txt file per bottleneck


def reader_pass(records_dir: str, node: str, batch_size: int) -> tuple[int, float]:
    dataset = reader.make_dataset(
        manifest_lib.Manifest.read(records_dir), node, offline_setup.SPLIT, batch_size
    )
    started = time.perf_counter()
    count = 0
    for bottleneck, _ in dataset:
        count += int(bottleneck.shape[0])
    return count, time.perf_counter() - started


def write_txt_cache(records_dir: str, node: str, txt_dir: str) -> list[list[str]]:
    """retrain.py's cache: one file per image per branch, its floats joined by commas. Returns the
    paths."""
    offline_setup.fresh_directory(txt_dir)
    paths = []
    for bottlenecks, _ in reader.make_dataset(
        manifest_lib.Manifest.read(records_dir), node, offline_setup.SPLIT, 16
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
        iter(
            reader.make_dataset(
                manifest_lib.Manifest.read(records_dir), node, offline_setup.SPLIT, 1
            )
        )
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
