"""jpeg-ladder-predict: classifying image files with an exported model, through its
serving_default."""

import csv
import io
import os
import time

import numpy as np
import tensorflow as tf
import tqdm

from pipeline.config import analysis as analysis_config
from pipeline.offline import decode_graph
from pipeline.offline import ladder
from pipeline.training import export
from tfrecords import fileio


def image_files(paths) -> list[str]:
    """The given image files, with each folder replaced by the files directly in it (sorted; hidden
    files left out)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if not name.startswith(".") and os.path.isfile(os.path.join(path, name))
            )
        else:
            files.append(path)
    return files


def classify_files(classifier: export.ExportedClassifier, paths) -> list:
    """Each image file's probabilities [classes] through serving_default, in one request, or the
    reason (a str) it could not be classified. Bytes the graph has no decoder for (TIFF, an 8-bit
    BMP, ...) go again as the PNG of the offline stage's decoding, as a client converts them."""
    results: list = [None] * len(paths)
    requests = []  # (index, bytes)
    for index, path in enumerate(paths):
        try:
            requests.append((index, fileio.read_bytes(path)))
        except (FileNotFoundError, tf.errors.NotFoundError):
            results[index] = "file not found"
        except (OSError, tf.errors.OpError) as error:
            results[index] = f"unreadable file: {error}"
    converted = []
    for index in _request(classifier, paths, requests, results):
        try:
            image = ladder.load_rgb(paths[index])
            converted.append((index, tf.io.encode_png(image, compression=1).numpy()))
        except ladder.BadImage as error:
            results[index] = str(error)
    _request(classifier, paths, converted, results)
    return results


def _request(classifier: export.ExportedClassifier, paths, requests, results) -> list[int]:
    """One serving_default request for [(index, bytes)], filling results[index]; returns the
    indices refused for a format the graph does not decode."""
    coded = None
    if classifier.serving["coded_branches"]:
        kept, pixels = [], []
        for index, data in requests:
            try:
                pixels.append(classifier.coded_pixels(ladder.load_rgb(paths[index])))
                kept.append((index, data))
            except ladder.BadImage as error:
                results[index] = str(error)
        requests, coded = kept, np.asarray(pixels, np.float32)
    if not requests:
        return []
    answer = classifier.serve([data for _, data in requests], coded)
    refused = []
    for row, (index, _) in enumerate(requests):
        error = answer["error"][row].decode()
        if answer["valid"][row]:
            results[index] = answer["probabilities"][row]
        elif error.startswith(decode_graph.UNDECODABLE):
            refused.append(index)
        else:
            results[index] = error
    return refused


def predict_files(config: analysis_config.PredictConfig) -> int:
    """Sends the images through serving_default, --batch-size at a time, and prints each image's
    top classes, or writes the top class per image to --csv (image,label,confidence); returns how
    many images could not be read."""
    classifier = export.ExportedClassifier(config.model)
    classifier.serve([])  # the first request prepares the graph: left out of the images/s
    paths = image_files(config.images)
    skipped, rows, started = 0, [], time.perf_counter()
    with tqdm.tqdm(total=len(paths), unit="image", disable=config.csv is None) as progress:
        for start in range(0, len(paths), config.batch_size):
            batch = paths[start : start + config.batch_size]
            for path, answer in zip(batch, classify_files(classifier, batch)):
                if isinstance(answer, str):
                    print(f"{path}: skipped: {answer}")
                    skipped += 1
                    continue
                ranked = answer.argsort()[::-1][: config.top]
                if config.csv is not None:
                    top = ranked[0]
                    rows.append((path, classifier.class_names[top], f"{answer[top]:.6f}"))
                    continue
                print(path)
                for rank, index in enumerate(ranked, 1):
                    print(f"  {rank}. {classifier.class_names[index]}  {answer[index]:.4f}")
            progress.update(len(batch))
    rate = len(paths) / max(time.perf_counter() - started, 1e-9)
    speed = f"{rate:.1f} images/s in batches of {config.batch_size}"
    if config.csv is not None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([("image", "label", "confidence"), *rows])
        fileio.write_text_atomic(config.csv, text.getvalue())
        print(
            f"predict: {len(rows)} images classified into {config.csv}, {skipped} skipped ({speed})"
        )
    else:
        print(f"predict: {len(paths) - skipped} images classified, {skipped} skipped ({speed})")
    return skipped
