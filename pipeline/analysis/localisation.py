"""How well the object view finds the object: its boxes (views.csv) against ground-truth boxes.

    jpeg-ladder-evaluate ... --records RECORDS --boxes-csv bounding_boxes.csv

The ground truth is one box per image in pixels of the photo, CUB's layout: `image,x,y,w,h` (a
header row optional; `image` is the image's path as the records name it, or a path ending in it, or
CUB's numeric image id with an `images.txt` beside the CSV mapping ids to paths). The object boxes
are normalised to the photo the branches showed (after --central-crop); both are compared in the
upright photo's pixels. Reported: the share of images whose box reaches IoU >= 0.5 (the usual
localisation criterion) and the mean IoU.
"""

import csv
import io
import os

import numpy as np

from pipeline import errors
from pipeline.offline import ladder
from pipeline.offline import views
from tfrecords import fileio
from tfrecords import manifest as manifest_lib

IOU_THRESHOLD = 0.5


def read_ground_truth(path: str) -> dict[str, tuple[float, float, float, float]]:
    """{image: (x, y, w, h) in pixels} from a CUB-style CSV (comma- or space-separated)."""
    text = fileio.read_text(path)
    if text is None:
        raise errors.UserError(f"--boxes-csv {path}: no such file")
    names = _cub_image_names(path)
    boxes = {}
    for row in _rows(text):
        if len(row) != 5:
            raise errors.UserError(
                f"--boxes-csv {path}: each row must be image,x,y,w,h; got {','.join(row)}"
            )
        try:
            x, y, width, height = (float(value) for value in row[1:])
        except ValueError:
            if not boxes:  # a header row
                continue
            raise errors.UserError(f"--boxes-csv {path}: not numbers in {','.join(row)}") from None
        boxes[names.get(row[0], row[0])] = (x, y, width, height)
    return boxes


def _rows(text: str):
    dialect = "excel" if "," in text.split("\n", 1)[0] else None
    if dialect:
        yield from (row for row in csv.reader(io.StringIO(text)) if row)
    else:  # CUB's own files are space-separated
        yield from (line.split() for line in text.splitlines() if line.strip())


def _cub_image_names(path: str) -> dict[str, str]:
    """CUB's images.txt beside the boxes file (id -> path), when there is one."""
    text = fileio.read_text(os.path.join(os.path.dirname(path), "images.txt"))
    if text is None:
        return {}
    return dict(line.split(maxsplit=1) for line in text.splitlines() if line.strip())


def read_object_boxes(manifest: manifest_lib.Manifest) -> dict[str, np.ndarray]:
    """{image id: its object box (y0, x0, y1, x1), normalised to the branches' photo}."""
    entry = (manifest.views or {}).get("csv")
    if entry is None:
        raise errors.UserError(
            f"the records in {manifest.directory} have no object boxes: make them with "
            "make-tfrecords --views object (or parts:K) to check the localisation"
        )
    text = fileio.read_text(fileio.join(manifest.directory, entry["path"]))
    rows = list(csv.reader(io.StringIO(text)))[1:]
    return {row[0]: np.asarray([float(value) for value in row[1:5]]) for row in rows}


def iou(first, second) -> float:
    """Intersection over union of two (y0, x0, y1, x1) boxes."""
    height = min(first[2], second[2]) - max(first[0], second[0])
    width = min(first[3], second[3]) - max(first[1], second[1])
    inter = max(0.0, height) * max(0.0, width)
    area = (first[2] - first[0]) * (first[3] - first[1])
    area += (second[2] - second[0]) * (second[3] - second[1])
    return inter / (area - inter) if area - inter > 0 else 0.0


def in_pixels(box, height: int, width: int, central_crop: float) -> np.ndarray:
    """A box normalised to the centrally cropped photo, in pixels (y0, x0, y1, x1) of the photo."""
    crop_height, crop_width = height * central_crop, width * central_crop
    top, left = (height - crop_height) / 2, (width - crop_width) / 2
    return np.asarray(
        [
            top + box[0] * crop_height,
            left + box[1] * crop_width,
            top + box[2] * crop_height,
            left + box[3] * crop_width,
        ]
    )


def _match(image_id: str, truth: dict) -> tuple | None:
    if image_id in truth:
        return truth[image_id]
    for name, box in truth.items():
        if image_id.endswith("/" + name) or name.endswith("/" + image_id):
            return box
    return None


def localisation(manifest: manifest_lib.Manifest, boxes_csv: str, image_ids=None) -> dict:
    """{"images", "iou_at_least_0.5", "mean_iou", "without_ground_truth"} over the records' images
    (of image_ids when given); the photos are read for their sizes."""
    truth = read_ground_truth(boxes_csv)
    found = read_object_boxes(manifest)
    root = manifest.source_root()
    ious, missing = {}, 0
    for image_id in image_ids if image_ids is not None else sorted(found):
        ground = _match(image_id, truth)
        if ground is None or image_id not in found:
            missing += 1
            continue
        height, width = ladder.load_rgb(fileio.join(root, image_id)).shape[:2]
        box = in_pixels(found[image_id], height, width, manifest.central_crop)
        x, y, box_width, box_height = ground
        ious[image_id] = iou(box, (y, x, y + box_height, x + box_width))
    if not ious:
        raise errors.UserError(
            f"--boxes-csv {boxes_csv}: no image of the records has a ground-truth box there "
            f"(records name images like {next(iter(found), '?')})"
        )
    values = np.asarray(list(ious.values()))
    return {
        "images": len(values),
        f"iou_at_least_{IOU_THRESHOLD}": float(np.mean(values >= IOU_THRESHOLD)),
        "mean_iou": float(values.mean()),
        "without_ground_truth": missing,
        "view_nodes": list((manifest.views or {}).get("nodes", ())),
        "boxes_file": views.VIEWS_CSV,
    }
