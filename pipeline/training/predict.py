"""jpeg-ladder-predict: classifying image files with an exported model."""

import csv
import io
import os

import tqdm

from pipeline import config as config_lib
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


def predict_files(config: config_lib.PredictConfig) -> int:
    """jpeg-ladder-predict: prints each image's top classes, or writes the top class per image to
    --csv (image,label,confidence); returns how many images could not be read."""
    classifier = export.ExportedClassifier(config.model)
    skipped, rows = 0, []
    for path in tqdm.tqdm(image_files(config.images), unit="image", disable=config.csv is None):
        try:
            probabilities = classifier.classify_file(path)
        except ladder.BadImage as error:
            print(f"{path}: skipped: {error}")
            skipped += 1
            continue
        ranked = probabilities.argsort()[::-1][: config.top]
        if config.csv is not None:
            top = ranked[0]
            rows.append((path, classifier.class_names[top], f"{probabilities[top]:.6f}"))
            continue
        print(path)
        for rank, index in enumerate(ranked, 1):
            print(f"  {rank}. {classifier.class_names[index]}  {probabilities[index]:.4f}")
    if config.csv is not None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([("image", "label", "confidence"), *rows])
        fileio.write_text_atomic(config.csv, text.getvalue())
        print(f"predict: {len(rows)} images classified into {config.csv}, {skipped} skipped")
    return skipped
