"""Estimating a JPEG file's quality factor from its quantisation tables (standard IJG scaling).

A file whose tables equal the IJG tables scaled for some quality Q (what libjpeg, Pillow, TensorFlow
and most cameras-turned-software write) gets exactly that Q. Other tables are "non-standard": they
get the nearest Q by mean absolute difference, reported apart from the exact ones.
"""

import collections
import dataclasses
import os

import numpy as np
import PIL.Image

from tfrecords import fileio

# ITU-T T.81 Annex K, in natural (row-major) order, as Pillow reports them.
_LUMINANCE = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ]
)
_CHROMINANCE = np.array(
    [
        17,
        18,
        24,
        47,
        99,
        99,
        99,
        99,
        18,
        21,
        26,
        66,
        99,
        99,
        99,
        99,
        24,
        26,
        56,
        99,
        99,
        99,
        99,
        99,
        47,
        66,
        99,
        99,
        99,
        99,
        99,
        99,
    ]
    + [99] * 32
)

NOT_JPEG = "not JPEG"
NOT_IMAGE = "not an image"
NON_STANDARD = "non-standard tables"
UNREADABLE = "unreadable"


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """The luminance and chrominance tables libjpeg writes for `quality` (baseline, clamped to
    1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (_LUMINANCE, _CHROMINANCE))


_STANDARD = {quality: ijg_tables(quality) for quality in range(1, 101)}


@dataclasses.dataclass(frozen=True)
class Estimate:
    quality: int | None  # the exact or nearest IJG quality; None when not a JPEG
    kind: str  # "standard", NON_STANDARD, NOT_JPEG, NOT_IMAGE or UNREADABLE


def estimate_tables(tables: dict) -> Estimate:
    """From Pillow's `image.quantization` ({0: luminance, 1: chrominance, ...}, natural order)."""
    luminance = np.asarray(tables[0])
    chrominance = np.asarray(tables[1]) if 1 in tables else None
    distances = {}
    for quality, (standard_luminance, standard_chrominance) in _STANDARD.items():
        distance = np.abs(luminance - standard_luminance).mean()
        if chrominance is not None:
            distance += np.abs(chrominance - standard_chrominance).mean()
        distances[quality] = distance
    nearest = min(distances, key=lambda quality: (distances[quality], -quality))
    return Estimate(nearest, "standard" if distances[nearest] == 0 else NON_STANDARD)


def estimate_file(path: str) -> Estimate:
    try:
        with PIL.Image.open(path) as image:
            if image.format != "JPEG":
                return Estimate(None, NOT_JPEG)
            return estimate_tables(image.quantization)
    except PIL.UnidentifiedImageError:
        return Estimate(None, NOT_IMAGE)
    except (OSError, ValueError, SyntaxError):
        return Estimate(None, UNREADABLE)


@dataclasses.dataclass
class Histogram:
    """Quality-factor counts of a set of files (the thesis's Figure 3.1), the odd ones apart."""

    standard: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    non_standard: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    not_jpeg: int = 0
    not_image: int = 0
    unreadable: int = 0

    def add(self, estimate: Estimate) -> None:
        if estimate.kind == "standard":
            self.standard[estimate.quality] += 1
        elif estimate.kind == NON_STANDARD:
            self.non_standard[estimate.quality] += 1
        elif estimate.kind == NOT_JPEG:
            self.not_jpeg += 1
        elif estimate.kind == NOT_IMAGE:
            self.not_image += 1
        else:
            self.unreadable += 1

    @property
    def total(self) -> int:
        return (
            sum(self.standard.values())
            + sum(self.non_standard.values())
            + self.not_jpeg
            + self.not_image
            + self.unreadable
        )

    def to_json(self) -> dict:
        return {
            "standard": {str(q): n for q, n in sorted(self.standard.items())},
            "non_standard_nearest": {str(q): n for q, n in sorted(self.non_standard.items())},
            "not_jpeg": self.not_jpeg,
            "not_image": self.not_image,
            "unreadable": self.unreadable,
            "total": self.total,
        }

    def text(self, width: int = 40) -> str:
        peak = max([*self.standard.values(), *self.non_standard.values(), 1])
        lines = [
            f"{self.total} files: {sum(self.standard.values())} JPEG with IJG tables, "
            f"{sum(self.non_standard.values())} JPEG with non-standard tables (nearest IJG "
            f"quality), {self.not_jpeg} images in other formats, {self.not_image} not images, "
            f"{self.unreadable} unreadable"
        ]
        for label, counts in (
            ("IJG quality", self.standard),
            ("nearest quality (non-standard)", self.non_standard),
        ):
            if counts:
                lines.append(label)
                lines.extend(
                    f"  Q{quality:>3} {count:>7}  {'#' * max(1, round(width * count / peak))}"
                    for quality, count in sorted(counts.items())
                )
        return "\n".join(lines)


def histogram_of_directory(directory: str) -> Histogram:
    histogram = Histogram()
    for root, directories, names in os.walk(directory):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                histogram.add(estimate_file(os.path.join(root, name)))
    return histogram


def plot(histogram: Histogram, path: str, title: str) -> None:
    from pipeline import plots  # matplotlib only when a plot is drawn

    figure, axes = plots.figure(figsize=(8, 3.5))
    qualities = np.arange(1, 101)
    axes.bar(qualities, [histogram.standard.get(q, 0) for q in qualities], label="IJG tables")
    axes.bar(
        qualities,
        [histogram.non_standard.get(q, 0) for q in qualities],
        bottom=[histogram.standard.get(q, 0) for q in qualities],
        label="non-standard (nearest)",
    )
    axes.set_xlabel("JPEG quality factor")
    axes.set_ylabel("files")
    axes.set_title(f"{title} ({histogram.not_jpeg} not JPEG, {histogram.unreadable} unreadable)")
    axes.legend()
    plots.save(figure, path)


def run(config) -> Histogram:
    """jpeg-ladder-qf-histogram: prints the histogram of config.directory (a HistogramConfig),
    --plot, --json."""
    if not os.path.isdir(config.directory):
        raise FileNotFoundError(f"{config.directory}: no such directory")
    histogram = histogram_of_directory(config.directory)
    print(histogram.text())
    if config.plot:
        plot(histogram, config.plot, os.path.basename(os.path.normpath(config.directory)))
        print(f"plot: {config.plot}")
    if config.json:
        fileio.write_json_atomic(config.json, histogram.to_json())
    return histogram
