"""The offline stage on Apache Beam: the local runner's shards, manifest and quarantine, computed by
Beam workers.

Only the extraction of the pending shards runs on Beam; everything around it (index, shard plan, job
identity, resume, manifest, quarantine.csv) is the job's (pipeline.offline.job), run once by the
launching process, which calls run_shards here as it calls the local runner's. The pipeline:

  batches of the plan --Reshuffle--> decode + ladder + one forward pass per batch (backbone loaded
  in DoFn.setup) --> serialized records, and unreadable images as a side output --CoGroupByKey by
  shard--> each shard written with the verified temp-then-rename writer, its result saved in
  OUT/.progress/.

A batch is a fixed slice of a shard's items (shard_work.batch_slices), padded to a fixed shape
exactly as the local runner pads it, so every image meets the same kernels at the same batch
position on either runner and the records are identical byte for byte. Beam's own BatchElements
would batch whatever arrives, which makes a batch's make-up, and so possibly the last bits of its
activations, depend on scheduling.

Paths: the launcher and the workers read the images, a weights file, a SavedModel and OUT through
tfrecords.fileio, so each may be a URL that tf.io.gfile reads on every machine (gs://, s3:// with
tensorflow-io, hdfs://, ...) or a local path that every machine mounts at the same place. A weights
URL is copied once per process to a local file for Keras; a SavedModel loads from its URL.

One job per output: for a local OUT the launcher takes the job's lock, as the local runner does
(flock only keeps out jobs that see the same lock: on a shared filesystem without cross-machine
flock it cannot see other machines). An object store has no lock, so the launcher takes none and
says so: starting two jobs on the same remote OUT is up to the user. Either way every shard is
written to a temporary name and renamed only when complete and verified, so no shard is ever
half-written. Workers take no lock: each writes only its own shard's files.

Interrupting the launcher (Ctrl-C) cancels the submitted job, so that it does not keep running, and
paying for workers, with nobody waiting for it; the same command resumes it.
"""

import shlex
import sys
import time

from pipeline import backbones
from pipeline import errors
from pipeline import interrupt
from pipeline.config import offline as offline_config
from pipeline.offline import ladder
from pipeline.offline import progress as progress_lib
from pipeline.offline import shard_work
from tfrecords import codec

try:
    import apache_beam
except ImportError:  # the optional [beam] extra: make_tfrecords says how to install it
    apache_beam = None

INSTALL_HINT = 'pip install -e ".[beam]"'
QUARANTINE_TAG = "quarantine"

# Defined against object when Beam is absent so that this module still imports (and make_tfrecords
# can say what to install) instead of failing with a bare ImportError.
_DoFn = apache_beam.DoFn if apache_beam is not None else object


def check_available(config: offline_config.ExtractConfig) -> None:
    """Beam is installed and --beam-options parse: checked before the backbone is built."""
    if apache_beam is None:
        raise errors.UserError(
            f"--runner beam needs Apache Beam, an optional extra: {INSTALL_HINT}"
        )
    pipeline_options(config)


def pipeline_options(config: offline_config.ExtractConfig):
    """config.beam_options as Beam PipelineOptions; with none, Beam's default DirectRunner on this
    machine."""
    try:
        flags = shlex.split(config.beam_options)
    except ValueError as error:
        raise errors.UserError(f"--beam-options {config.beam_options!r}: {error}") from None
    return apache_beam.options.pipeline_options.PipelineOptions(flags)


def run_shards(
    extraction: shard_work.Extraction, backbone, model, pending, progress: progress_lib.Progress
) -> float:
    """The job's runner on Beam: extracts and writes the pending shards; returns the seconds
    spent."""
    config = extraction.config
    started = time.perf_counter()
    encodings = progress.encodings()
    if encodings is None:
        encodings = _first_batch_encodings(extraction, backbone, model, pending)
        if encodings is not None:
            progress.save_encodings(encodings)
    batches = [
        ((task.split, task.index, task.num_shards), number, items)
        for task in pending
        for number, items in enumerate(shard_work.batch_slices(task, config.batch_size))
    ]
    pipeline = apache_beam.Pipeline(options=pipeline_options(config))
    extracted = (
        pipeline
        | "Batches" >> apache_beam.Create(batches)
        # Create hands its elements out in one piece; the reshuffle spreads the batches over
        # workers.
        | "Spread" >> apache_beam.Reshuffle()
        | "Extract"
        >> apache_beam.ParDo(_ExtractBatch(extraction, encodings)).with_outputs(
            QUARANTINE_TAG, main="records"
        )
    )
    _ = (
        {"records": extracted.records, "quarantine": extracted[QUARANTINE_TAG]}
        | "ByShard" >> apache_beam.CoGroupByKey()
        | "Write" >> apache_beam.ParDo(_WriteShard(extraction))
    )
    wait_for(pipeline.run())
    missing = [task.name for task in pending if progress.shard_result(task.name) is None]
    if missing:
        raise errors.UserError(
            f"the Beam job ended without writing shards {missing[:5]} (of {len(missing)}): "
            "rerun the same command to redo them"
        )
    return time.perf_counter() - started


def wait_for(result) -> None:
    """Waits for a submitted Beam job; when the launcher is interrupted, cancels the job, then
    re-raises.

    Without the cancel, a job on Dataflow, Flink or Spark would go on running (and paying for its
    workers) after Ctrl-C, and a rerun would race it for the same shards.
    """
    try:
        result.wait_until_finish()
    except (KeyboardInterrupt, interrupt.Interrupted):
        _cancel(result)
        raise


def _cancel(result) -> None:
    try:
        result.cancel()
    except (
        NotImplementedError
    ):  # a runner that cannot cancel, e.g. a DirectRunner whose job already ended
        return
    except (
        Exception
    ) as error:  # the interruption is what gets reported; a failed cancel only needs saying
        print(
            f"make_tfrecords: could not cancel the Beam job ({type(error).__name__}: {error}); "
            "cancel it with the runner's own tools before rerunning",
            file=sys.stderr,
        )
        return
    print(
        "make_tfrecords: the Beam job was cancelled; rerun the same command to resume it",
        file=sys.stderr,
    )


def _first_batch_encodings(extraction: shard_work.Extraction, backbone, model, pending):
    """The encoding of each node, chosen from the job's first batch as the local runner chooses it.

    Decided here, once, before any worker starts, so that every shard of the job uses the same one.
    None when every image of the job is unreadable.
    """
    forward = shard_work.BatchForward(backbone, model, extraction)
    branch_images = shard_work.branch_images_function(extraction)
    for task in pending:
        for items in shard_work.batch_slices(task, extraction.config.batch_size):
            kept, activations, _, _ = _extract(forward, branch_images, items)
            if kept:
                return {
                    node: codec.choose_encoding(activations[node], extraction.config.storage_dtype)
                    for node in extraction.nodes
                }
    return None


def _extract(forward, branch_images, items):
    """Decodes one batch's images and runs the CNN once (and on their views): (kept items,
    activations, views boxes or None, [(position, row)])."""
    kept, quarantined = [], []
    for position, item in enumerate(items):
        try:
            image = ladder.load_rgb(item.path)
        except ladder.BadImage as error:
            quarantined.append((position, [item.path, str(error)]))
            continue
        pixels, photo = branch_images(image)
        forward.put(len(kept), pixels.numpy(), photo)
        kept.append(item)
    activations, boxes = forward.run(len(kept)) if kept else (None, None)
    return kept, activations, boxes, quarantined


class _ExtractBatch(_DoFn):
    """(shard key, batch number, items) -> (shard key, (batch number, records, zero counts)); bad
    images aside."""

    def __init__(self, extraction: shard_work.Extraction, encodings):
        # Only names and numbers travel with the pipeline; the backbone is built on the worker.
        self.extraction = extraction
        self.encodings = encodings
        self.forward = None
        self.branch_images = None

    def setup(self):
        config = self.extraction.config
        shard_work.check_paths(config)
        backbone = backbones.spec(config)
        model = backbones.for_job(config, backbone, self.extraction.input_size)
        self.forward = shard_work.BatchForward(backbone, model, self.extraction)
        self.branch_images = shard_work.branch_images_function(self.extraction)

    def process(self, element):
        shard_key, number, items = element
        kept, activations, boxes, quarantined = _extract(self.forward, self.branch_images, items)
        for position, row in quarantined:
            yield apache_beam.pvalue.TaggedOutput(
                QUARANTINE_TAG, (shard_key, (number, position, row))
            )
        if kept:
            batch = shard_work.serialize_batch(
                kept, activations, self.encodings, self.extraction.config.storage_dtype, boxes
            )
            yield shard_key, (number, *batch)


class _WriteShard(_DoFn):
    """(shard key, its batches and quarantine) -> the shard's files, verified and renamed, and its
    result."""

    def __init__(self, extraction: shard_work.Extraction):
        self.extraction = extraction
        self.progress = None

    def setup(self):
        shard_work.check_paths(self.extraction.config)
        self.progress = progress_lib.Progress(self.extraction.config.out_dir)

    def process(self, element):
        (split, index, num_shards), grouped = element
        config = self.extraction.config
        name = shard_work.ShardTask(split, index, num_shards, ()).name
        builder = shard_work.ShardBuilder(
            name, split, index, config.out_dir, self.extraction.nodes, config.compression
        )
        try:
            builder.quarantine.extend(
                row for _, _, row in sorted(grouped["quarantine"], key=lambda bad: bad[:2])
            )
            for _, records, zeros, boxes in sorted(grouped["records"], key=lambda batch: batch[0]):
                builder.add_records(records, zeros, boxes)
            result = builder.finish()
        except BaseException:
            builder.abort()
            raise
        self.progress.save_shard_result(name, result)
        yield name
