"""TensorBoard logs of a training run: per-stage scalars, hparams, best top-1 per stage, a JPEG
ladder."""

import csv
import io
import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from pipeline import branches as branches_lib
from pipeline.offline import codecs
from pipeline.offline import ladder
from pipeline.offline import tcm
from pipeline.offline import views
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

SAMPLE_BOXES = 4  # images shown with their views' boxes
BOX_IMAGE_SIZE = 256

STAGES_RUN = "stages"


class StageWriters:
    """The train and validation runs of one stage: loss, top-1, top-5 and learning rate."""

    def __init__(self, directory: str):
        self._train = tf.summary.create_file_writer(os.path.join(directory, "train"))
        self._validation = tf.summary.create_file_writer(os.path.join(directory, "validation"))

    @staticmethod
    def _write(writer, step: int, metrics: dict, learning_rate: float) -> None:
        with writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(name, value)
            tf.summary.scalar("learning_rate", learning_rate)
        writer.flush()

    def train(self, step: int, metrics: dict, learning_rate: float) -> None:
        self._write(self._train, step, metrics, learning_rate)

    def validation(self, step: int, metrics: dict, learning_rate: float) -> None:
        self._write(self._validation, step, metrics, learning_rate)

    def path(self, path) -> None:
        """A solved stage's one summary: validation loss along its L2 path (x = the point)."""
        with self._validation.as_default():
            for index, point in enumerate(path.to_json()):
                tf.summary.scalar("l2_path/validation_loss", point["validation_loss"], step=index)
                tf.summary.scalar("l2_path/l2", point["l2"], step=index)
        self._validation.flush()

    def close(self) -> None:
        self._train.close()
        self._validation.close()


_HPARAMS = (
    "stage",
    "node",
    "learning_rate",
    "branches",
    "batch_size",
    "momentum",
    "head_init",
    "train_batchnorm",
    "backbone",
    "fusion",
    "optimizer",
    "head",
    "seed",
)


class _Silent:
    """Stands in for a run's writers when it writes no TensorBoard runs (a selection's
    candidates): every call does nothing."""

    def __getattr__(self, name):
        return lambda *arguments, **options: self


def sweep_summary(directory: str, sweep) -> None:
    """A learning-rate sweep's one TensorBoard summary: each candidate's validation loss and top-1
    (x = the candidate, in sweep order), and the choice."""
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default():
        for index, row in enumerate(sweep.candidates):
            tf.summary.scalar("sweep/validation_loss", row.validation_loss, step=index)
            tf.summary.scalar("sweep/validation_top1", row.validation_top1, step=index)
            tf.summary.scalar("sweep/learning_rate", row.learning_rate, step=index)
        tf.summary.text("sweep/chosen", f"{sweep.chosen:g} ({sweep.chosen_by})", step=0)
    writer.close()


SILENT = _Silent()


class RunLogs:
    def __init__(self, logdir: str):
        self.logdir = logdir
        self._stages = tf.summary.create_file_writer(os.path.join(logdir, STAGES_RUN))
        # Declaring the metrics makes the hparams view show each stage's best top-1 rather than
        # whatever scalar happened to be logged last.
        experiment = tf.summary.create_file_writer(logdir)
        with experiment.as_default():
            hparams_api.hparams_config(
                hparams=[hparams_api.HParam(name) for name in _HPARAMS],
                metrics=[
                    hparams_api.Metric("best_top1", group="validation", display_name="best top-1"),
                    hparams_api.Metric("top5", group="validation", display_name="last top-5"),
                    hparams_api.Metric("loss", group="validation", display_name="last loss"),
                ],
            )
        experiment.close()

    def stage_writers(self, stage, setup) -> StageWriters:
        config = setup.config
        directory = os.path.join(self.logdir, stage.name)
        hparams_writer = tf.summary.create_file_writer(directory)
        with hparams_writer.as_default():
            hparams_api.hparams(
                {
                    "stage": stage.index,
                    "node": stage.node,
                    "learning_rate": "solved"
                    if stage.learning_rate is None
                    else stage.learning_rate,
                    "branches": ",".join(map(str, setup.branches)),
                    "batch_size": config.batch_size,
                    "momentum": config.momentum_value,
                    "head_init": config.head_init,
                    "train_batchnorm": config.train_batchnorm,
                    "backbone": setup.backbone.name,
                    "fusion": config.fusion,
                    "optimizer": config.optimizer,
                    "head": config.head,
                    "seed": config.seed,
                },
                trial_id=stage.name,
            )
        hparams_writer.close()
        return StageWriters(directory)

    def stage_summary(self, stage, outcome) -> None:
        """The cross-stage view: best validation top-1/top-5 at x = stage index (the thesis's Figure
        4.2)."""
        with self._stages.as_default(step=stage.index):
            if outcome.best_top1 is not None:  # a replay has no validation scores
                tf.summary.scalar("best_top1", outcome.best_top1)
                tf.summary.scalar("best_top5", outcome.best_top5)
            tf.summary.text(
                "stage",
                f"stage {stage.index}: node {stage.node} ({outcome.thesis_block}), "
                f"{_how(stage, outcome)}, ended by {outcome.ended_by}",
            )
        self._stages.flush()

    def sample_ladder(self, manifest: manifest_lib.Manifest) -> str | None:
        """One validation image's branches as TensorBoard images, when the source images are at
        hand."""
        sample = first_source_image(manifest)
        try:
            image = ladder.load_rgb(sample) if sample else None
        except ladder.BadImage:  # changed since the records were made
            image = None
        if image is None:
            return None
        branches = ladder.jpeg_ladder(image, manifest.qualities)
        other = branches_lib.other_codecs(manifest.branch_names)
        if other:  # the other codecs' re-encodings, as the offline stage made them
            branches = tf.concat([branches, codecs.coded_images(image, other)], 0)
        with self._stages.as_default(step=0):
            tf.summary.image(
                "jpeg_ladder",
                branches,
                max_outputs=len(manifest.branches),
                description=f"{sample}: "
                + ", ".join(
                    name
                    for name in manifest.branch_names
                    if name == branches_lib.ORIGINAL or branches_lib.coded(name)
                ),
            )
        self._stages.flush()
        return sample

    def sample_tcm(self, manifest: manifest_lib.Manifest) -> dict | None:
        """One image's tcm mask as a TensorBoard image (see tcm_sample)."""
        sample = tcm_sample(manifest)
        if sample is None:
            return None
        with self._stages.as_default(step=0):
            tf.summary.image(
                "tcm_mask",
                sample["picture"][None],
                description=f"{sample['path']}: blocks compressed at the low quality tinted blue; "
                f"{100 * sample['high_share']:.1f} % kept at the high quality",
            )
        self._stages.flush()
        return sample

    def sample_boxes(self, manifest: manifest_lib.Manifest, count: int = SAMPLE_BOXES) -> int:
        """A few images with the object box (and part windows) the views were cropped by, as
        TensorBoard images; how many were drawn (none without boxes or source images)."""
        root = manifest.source_root()
        entry = (manifest.views or {}).get("csv")
        if root is None or entry is None:
            return 0
        text = fileio.read_text(fileio.join(manifest.directory, entry["path"])) or ""
        drawn = []
        for row in list(csv.reader(io.StringIO(text)))[1 : count + 1]:
            try:
                image = ladder.load_rgb(fileio.join(root, row[0]))
            except ladder.BadImage:
                continue
            photo = views.cropped_photo(image, manifest.central_crop)
            photo = tf.image.resize(photo[None], (BOX_IMAGE_SIZE, BOX_IMAGE_SIZE)) / 255.0
            boxes = tf.reshape(tf.constant([float(value) for value in row[1:]]), [1, -1, 4])
            colors = [[1.0, 0.0, 0.0]] + [[1.0, 1.0, 0.0]] * (int(boxes.shape[1]) - 1)
            drawn.append(tf.image.draw_bounding_boxes(photo, boxes, colors)[0])
        if drawn:
            with self._stages.as_default(step=0):
                tf.summary.image(
                    "views_boxes",
                    tf.stack(drawn),
                    max_outputs=len(drawn),
                    description="object box (red) and part windows (yellow) of the first images "
                    "in views.csv",
                )
            self._stages.flush()
        return len(drawn)


def _how(stage, outcome) -> str:
    if outcome.solver is not None:
        return f"solved, L2 {outcome.solver['l2']:.3g}, {outcome.steps} iterations"
    return f"lr {stage.learning_rate:g}, {outcome.steps} steps"


def tcm_sample(manifest: manifest_lib.Manifest) -> dict | None:
    """The first validation image under the tcm view: {"path", "picture" (uint8, its blocks
    compressed at the low quality tinted), "high_share" (of its blocks kept at the high quality)};
    None without a tcm view or the source images."""
    spec = views.ViewSpec.parse((manifest.views or {}).get("spec"))
    sample = first_source_image(manifest) if spec.tcm is not None else None
    try:
        image = ladder.load_rgb(sample) if sample else None
    except ladder.BadImage:
        return None
    if image is None:
        return None
    photo = np.asarray(views.cropped_photo(image, manifest.central_crop))
    std = spec.tcm[2]
    return {
        "path": sample,
        "picture": tcm.mask_picture(photo, std),
        "high_share": float(np.mean(tcm.keep_mask(photo, std))),
    }


def first_source_image(manifest: manifest_lib.Manifest) -> str | None:
    """The source file of the first validation record: image ids are paths relative to the source,
    so one record names it without walking a dataset that may hold a million files."""
    root = manifest.source_root()
    if root is None:
        return None
    node = next(iter(manifest.nodes))
    for _, _, image_ids in reader.make_dataset(manifest, node, "validation", 1, with_ids=True).take(
        1
    ):
        path = os.path.join(root, image_ids.numpy()[0].decode())
        return path if os.path.isfile(path) else None  # the images need not live beside the records
    return None
