"""Indexing a dataset: image files, labels, stable ids and train/validation/test splits.

test is the input's own held-out images (a val/, validation/ or test/ folder, or the CSV's split
column); validation is carved from the training images by a stable hash of each id; a flat
root/<class>/* tree gets both by hash. Only evaluation reads test: everything that chooses looks at
validation.

The dataset may live in a local folder or behind any URL tf.io.gfile reads (gs://, s3://, ...); both
give the same order and the same image ids.
"""

import csv
import dataclasses
import os
import posixpath
import warnings

from pipeline import errors
from tfrecords import fileio
from tfrecords import shards

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
# Input split names -> the records' split: the held-out part of the input is the test split.
_SPLIT_DIRECTORIES = {"train": TRAIN, "val": TEST, "validation": TEST, "test": TEST}


@dataclasses.dataclass(frozen=True)
class ImageItem:
    path: str
    label: int
    image_id: str  # the path relative to the dataset root: stable across machines and runs
    split: str


@dataclasses.dataclass(frozen=True)
class ImageIndex:
    items: tuple[ImageItem, ...]
    class_names: tuple[str, ...]

    def split(self, name: str) -> list[ImageItem]:
        return [item for item in self.items if item.split == name]

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(name for name in SPLITS if self.split(name))


def _files_below(directory: str) -> list[str]:
    # Every visible file is a candidate: the format is read from the content, not the name,
    # and whatever is not an image ends up in quarantine rather than silently ignored.
    # Linked folders are followed (datasets are often assembled from links), each real folder once,
    # so a link back up the tree cannot make the walk loop forever. Object stores have no links.
    remote = fileio.is_remote(directory)
    found = []
    visited = set()
    for root, directories, files in fileio.walk(directory, followlinks=True):
        if not remote:
            status = os.stat(root)
            visited.add((status.st_dev, status.st_ino))
        kept = []
        for name in sorted(name for name in directories if not name.startswith(".")):
            if remote or _first_visit(os.path.join(root, name), visited):
                kept.append(name)
        directories[:] = kept
        found.extend(fileio.join(root, name) for name in sorted(files) if not name.startswith("."))
    return found


def _first_visit(path: str, visited: set) -> bool:
    """Whether the local folder path (perhaps a link) is one not walked yet; warns when it is
    skipped."""
    try:
        status = os.stat(path)
    except OSError as error:  # a dangling or looping link
        warnings.warn(f"skipping {path}: {error.strerror}", stacklevel=4)
        return False
    if (status.st_dev, status.st_ino) in visited:
        warnings.warn(
            f"skipping {path}: it links to a folder already listed ({os.path.realpath(path)})",
            stacklevel=4,
        )
        return False
    visited.add((status.st_dev, status.st_ino))
    return True


def _class_directories(directory: str) -> list[str]:
    return sorted(
        name
        for name in fileio.listdir(directory)
        if not name.startswith(".") and fileio.isdir(fileio.join(directory, name))
    )


def _split(given: str | None, image_id: str, validation_percent: float, test_percent: float) -> str:
    if given == TEST:
        return TEST
    if given == TRAIN:  # the input's own training images: validation is carved from them
        return shards.split_for(image_id, validation_percent)
    return shards.split_for(image_id, validation_percent, test_percent)


def index_directory(
    data_dir: str, validation_percent: float, test_percent: float = 10.0
) -> ImageIndex:
    """root/<class>/* (split by a stable hash of the id) or root/train|val|test/<class>/*."""
    if not fileio.isdir(data_dir):
        raise FileNotFoundError(f"--data-dir {data_dir}: no such directory")
    top = _class_directories(data_dir)
    presplit = bool(top) and all(name in _SPLIT_DIRECTORIES for name in top)
    roots = (
        [(fileio.join(data_dir, name), _SPLIT_DIRECTORIES[name]) for name in top]
        if presplit
        else [(data_dir, None)]
    )
    class_names = sorted({name for root, _ in roots for name in _class_directories(root)})
    if not class_names:
        raise errors.UserError(
            f"--data-dir {data_dir} has no class folders: expected root/<class>/* "
            f"or root/train|val/<class>/*"
        )
    label_of = {name: label for label, name in enumerate(class_names)}
    items = []
    for root, split in roots:
        for class_name in _class_directories(root):
            for path in _files_below(fileio.join(root, class_name)):
                image_id = fileio.relpath(path, data_dir)
                items.append(
                    ImageItem(
                        path,
                        label_of[class_name],
                        image_id,
                        _split(split, image_id, validation_percent, test_percent),
                    )
                )
    return _checked(ImageIndex(tuple(items), tuple(class_names)), f"--data-dir {data_dir}")


def index_csv(labels_csv: str, validation_percent: float, test_percent: float = 10.0) -> ImageIndex:
    """A CSV of file,label[,split]; files relative to the CSV's folder.

    A header row is optional. With one, the file is the first column, the label the column named
    label (else the second) and the split the column named split (if any); other columns, such as a
    class name beside its index, are left out.

    Labels are class names, numbered 0..K-1 in sorted order; integer labels (ids, which may be
    sparse: 12, 99, 4780) in numeric order, so that a head has one output per class present and the
    ids stay the class names (with --imagenet-labels they are ImageNet indices).
    """
    if not fileio.isfile(labels_csv):
        raise FileNotFoundError(f"--labels-csv {labels_csv}: no such file")
    with fileio.open_text(labels_csv) as file:
        rows = [row for row in csv.reader(file) if row and not row[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("file", "path", "filename"):
        header = [name.strip().lower() for name in rows[0]]
        label = header.index("label") if "label" in header else 1
        split = [header.index("split")] if "split" in header else []
        width = len(header)
        rows = [
            [row[0], row[label], *(row[column] for column in split)] if len(row) == width else row
            for row in rows[1:]
        ]
    bad = [number for number, row in enumerate(rows, 1) if len(row) not in (2, 3)]
    if bad:
        raise errors.UserError(
            f"--labels-csv {labels_csv}: rows {bad[:5]} do not have file,label[,split] (or the "
            "header's columns)"
        )
    labels = [row[1].strip() for row in rows]
    if labels and all(label.lstrip("-").isdigit() for label in labels):
        numbers = [int(label) for label in labels]
        if min(numbers) < 0:
            raise errors.UserError(f"--labels-csv {labels_csv}: negative label {min(numbers)}")
        ids = sorted(set(numbers))
        position = {number: index for index, number in enumerate(ids)}
        class_names = tuple(str(number) for number in ids)
        numbers = [position[number] for number in numbers]
    else:
        class_names = tuple(sorted(set(labels)))
        numbers = [class_names.index(label) for label in labels]
    root = fileio.dirname(labels_csv)
    items = []
    for row, label in zip(rows, numbers):
        file_name = row[0].strip()
        split = _SPLIT_DIRECTORIES.get(row[2].strip().lower()) if len(row) == 3 else None
        if len(row) == 3 and split is None:
            raise errors.UserError(
                f"--labels-csv {labels_csv}: unknown split {row[2]!r} for {file_name} "
                f"(use train, or val or test for held-out images)"
            )
        image_id = os.path.normpath(file_name).replace(os.sep, "/")
        # An object store takes "a/../b" literally, so a URL is built from the normalized name.
        path = (
            fileio.join(root, posixpath.normpath(file_name))
            if fileio.is_remote(root)
            else os.path.join(root, file_name)
        )
        items.append(
            ImageItem(
                path, label, image_id, _split(split, image_id, validation_percent, test_percent)
            )
        )
    return _checked(ImageIndex(tuple(items), class_names), f"--labels-csv {labels_csv}")


def _checked(index: ImageIndex, source: str) -> ImageIndex:
    if not index.items:
        raise errors.UserError(f"{source} lists no image files")
    seen = set()
    for item in index.items:
        if item.image_id in seen:
            raise errors.UserError(f"{source} lists {item.image_id} twice")
        seen.add(item.image_id)
    return index
