"""The offline stage as one job: plan, identity, resume, manifest, quarantine and summary, around a
runner.

    make_tfrecords(config)   index the images -> plan the shards -> check the job's identity against
                             OUT
                             -> the runner extracts the pending shards -> manifest.json,
                             quarantine.csv, timings.json and a one-paragraph summary

The runner (config.runner) only decides where the shard work runs: `local` in this process
(pipeline.offline.local), `beam` on any Apache Beam runner (pipeline.offline.beam). Both write the
same shards through pipeline.offline.shard_work and keep their progress in OUT/.progress/, so a
killed job rerun with the same command redoes only the shards that were not finished and ends with
output identical to an uninterrupted run.

Every path (images, --labels-csv, --weights, a savedmodel: backbone, OUT) may be local or a URL that
tf.io.gfile reads (gs://, s3://, ...); all file access goes through tfrecords.fileio. A local OUT is
locked against a second job; an object store has no lock, so there keeping one job per OUT is up to
the user.
"""

import contextlib
import csv
import dataclasses
import hashlib
import io
import math
import sys
import time

from bottlenecks import cut
from bottlenecks import registry
from pipeline import backbones
from pipeline.config import offline as offline_config
from pipeline.offline import codecs
from pipeline.offline import images
from pipeline.offline import local
from pipeline.offline import progress as progress_lib
from pipeline.offline import shard_work
from pipeline.offline import views
from tfrecords import codec
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import shards
from tfrecords import verify
from tfrecords import writer

QUARANTINE_NAME = "quarantine.csv"
TIMINGS_NAME = "timings.json"


def index_images(config: offline_config.ExtractConfig) -> images.ImageIndex:
    if config.data_dir is not None:
        return images.index_directory(
            config.data_dir, config.validation_percent, config.test_percent
        )
    return images.index_csv(config.labels_csv, config.validation_percent, config.test_percent)


def plan(
    index: images.ImageIndex,
    config: offline_config.ExtractConfig,
    example_shapes: dict[str, tuple[int, ...]],
) -> list[shard_work.ShardTask]:
    """Deterministic shard assignment of every image, per split."""
    largest = max(len(index.split(split)) for split in index.split_names)
    tasks = []
    for split in index.split_names:
        items = index.split(split)
        if config.num_shards is not None:
            num_shards = max(1, round(config.num_shards * len(items) / largest))
        else:
            dense_bytes = max(4 * math.prod(shape) for shape in example_shapes.values())
            num_shards = shards.num_shards_for(
                len(items), dense_bytes, int(config.shard_size_mb * 2**20)
            )
        chunks = shards.plan_shards([item.image_id for item in items], num_shards)
        tasks.extend(
            shard_work.ShardTask(split, number, len(chunks), tuple(items[i] for i in chunk))
            for number, chunk in enumerate(chunks)
        )
    return tasks


def identity(
    config: offline_config.ExtractConfig,
    backbone: registry.Backbone,
    nodes,
    input_size: int,
    index: images.ImageIndex,
    view_nodes=(),
) -> dict:
    """Everything that determines the output; a rerun must match it to resume."""
    weights = backbones.identity(config, backbone)
    listing = hashlib.sha256(
        "\n".join(f"{item.image_id},{item.label},{item.split}" for item in index.items).encode()
    ).hexdigest()
    # Only feature vector models have an input range: keeping the key out otherwise lets jobs
    # started before it existed resume.
    model_input = (
        {"input_range": list(backbone.input_range)} if backbone.input_range is not None else {}
    )
    # Named only when not the default, so that the jobs written before storage dtypes existed (all
    # float32) still resume; a rerun with another dtype than the output's is then refused like any
    # changed setting.
    dtype = {} if config.storage_dtype == codec.FLOAT32 else {"storage_dtype": config.storage_dtype}
    # Named only with views, so that jobs written before views existed still resume.
    with_views = (
        {"views": list(config.views), "view_nodes": list(view_nodes)} if config.views else {}
    )
    # Named only with codecs other than JPEG, so that the jobs written before them still resume.
    other = {name: list(values) for name, values in config.other_codecs}
    with_codecs = {"codecs": other} if other else {}
    return {
        "backbone": backbone.name,
        **model_input,
        "weights": weights,
        "nodes": list(nodes),
        "input_size": input_size,
        "central_crop": config.central_crop,
        "qualities": list(config.jpeg_qualities),
        "num_shards": config.num_shards,
        "shard_size_mb": config.shard_size_mb,
        "validation_percent": config.validation_percent,
        "test_percent": config.test_percent,
        "compression": config.compression,
        "batch_size": config.batch_size,
        "seed": config.seed if weights["kind"] == "none" else None,
        "images": listing,
        **dtype,
        **with_views,
        **with_codecs,
    }


def output_lock(out_dir: str):
    """The lock that keeps a second job off a local out_dir; none for an object store, which has no
    lock."""
    if not fileio.is_remote(out_dir):
        return writer.OutputLock(out_dir)
    print(
        f"make_tfrecords: {out_dir} is not locked (object stores have no lock): starting two jobs "
        "on the same output directory is up to you; every shard is still written whole or not at "
        "all",
        file=sys.stderr,
    )
    return contextlib.nullcontext()


def runner_for(config: offline_config.ExtractConfig):
    """The module whose run_shards(extraction, backbone, model, pending, progress) extracts the
    pending shards."""
    if config.runner == "beam":
        from pipeline.offline import beam  # an optional extra: imported only when asked for

        beam.check_available(config)
        return beam
    return local


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a job made: the manifest it wrote, for whatever goes on with the records (the demo's
    comparison), and the run's summary (timings.json: images written, skipped, processed, shards
    redone, seconds, its one paragraph as "text")."""

    manifest: manifest_lib.Manifest
    summary: dict


def make_tfrecords(config: offline_config.ExtractConfig) -> Outcome:
    """Runs (or resumes) the offline stage on config.runner and returns its manifest and summary;
    see the module docstring."""
    started = time.perf_counter()
    runner = runner_for(config)
    shard_work.check_paths(config)
    codecs.check_available(config.codecs)
    backbone = backbones.spec(config)
    nodes = registry.check_nodes(backbone, config.nodes or backbone.default_stages)
    input_size = registry.check_input_size(backbone, config.input_size)
    view_nodes = views.view_nodes(backbone, config.view_nodes) if config.views else ()
    index = index_images(config)
    backbones.check_weights_file(config, backbone)
    fileio.makedirs(config.out_dir)
    with output_lock(config.out_dir):
        job_identity = identity(config, backbone, nodes, input_size, index, view_nodes)
        # Built before the job is recorded: a model that does not build (wrong --input-size, say)
        # must not make the corrected command look like another job.
        model = backbones.for_job(config, backbone, input_size)
        progress = progress_lib.Progress(config.out_dir)
        progress.start(job_identity)
        extraction = shard_work.Extraction(config, nodes, input_size, view_nodes)
        example_shapes = {
            node: (extraction.num_branches,) + shape
            for node, shape in cut.node_shapes(model, nodes).items()
        }
        tasks = plan(index, config, example_shapes)
        pending = progress.pending(tasks)
        for node in nodes:
            fileio.makedirs(fileio.join(config.out_dir, node))
            writer.remove_temporaries(fileio.join(config.out_dir, node))
        extracting_seconds = 0.0
        if pending:
            extracting_seconds = runner.run_shards(extraction, backbone, model, pending, progress)
        results = [progress.shard_result(task.name) for task in tasks]
        views_block = _write_views(config.out_dir, extraction, results) if config.views else None
        manifest = _manifest(
            config, job_identity, index, example_shapes, progress.encodings(), results
        )
        manifest = dataclasses.replace(
            manifest,
            branches=extraction.branch_names,
            views=views_block,
            directory=config.out_dir,  # as Manifest.read would return it: its shard paths resolve
        )
        manifest.write(config.out_dir)
        _write_quarantine(config.out_dir, results)
        summary = _summary(
            manifest, results, pending, time.perf_counter() - started, extracting_seconds
        )
        fileio.write_json_atomic(fileio.join(config.out_dir, TIMINGS_NAME), summary)
    print(summary["text"])
    return Outcome(manifest, summary)


def verify_output(out_dir: str) -> verify.Report:
    """Checks every shard a finished job wrote against its manifest and prints one line per bad
    shard."""
    report = verify.verify_records(out_dir)
    print(report.text())
    return report


def _manifest(
    config, job_identity, index, example_shapes, encodings, results
) -> manifest_lib.Manifest:
    nodes = job_identity["nodes"]
    encodings = encodings or {node: codec.DENSE for node in nodes}  # every image was quarantined
    shards_of = {}
    for result in results:
        shards_of.setdefault(result["split"], []).append(
            manifest_lib.ShardInfo(
                index=result["index"],
                num_records=result["num_records"],
                files={
                    node: manifest_lib.FileInfo(**file) for node, file in result["files"].items()
                },
            )
        )
    splits = {
        split: manifest_lib.SplitInfo(
            sum(shard.num_records for shard in shard_list), tuple(shard_list)
        )
        for split, shard_list in shards_of.items()
    }
    node_entries = {}
    num_records = sum(result["num_records"] for result in results)
    for node in nodes:
        zeros = sum(result["zeros"][node][0] for result in results)
        total = sum(result["zeros"][node][1] for result in results)
        stored = sum(result["files"][node]["num_bytes"] for result in results)
        node_entries[node] = manifest_lib.NodeInfo(
            shape=tuple(example_shapes[node]),
            dtype=config.storage_dtype,
            encoding=encodings[node],
            zero_fraction=zeros / total if total else 0.0,
            bytes_per_image=stored / num_records if num_records else 0.0,
            float32_bytes_per_image=4 * math.prod(example_shapes[node]),
        )
    run_config = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dataclasses.asdict(config).items()
        # Where the output lives and how it was watched do not describe it.
        if key not in ("out_dir", "progress")
    }
    return manifest_lib.Manifest(
        nodes=node_entries,
        splits=splits,
        compression=config.compression,
        backbone=job_identity["backbone"],
        weights=job_identity["weights"],
        input_size=job_identity["input_size"],
        input_range=tuple(job_identity["input_range"]) if "input_range" in job_identity else None,
        central_crop=config.central_crop,
        qualities=tuple(config.jpeg_qualities),
        codecs=job_identity.get("codecs"),
        class_names=tuple(index.class_names),
        num_quarantined=sum(len(result["quarantine"]) for result in results),
        config=run_config,
    )


def _write_views(out_dir: str, extraction: shard_work.Extraction, results) -> dict:
    """views.csv (each image's object box and part windows, normalised to the photo) and the
    manifest's views block: the spec, the nodes, the rules and the boxes' statistics."""
    spec = extraction.spec
    rows = sorted(
        (row for result in results for row in result.get("boxes", [])), key=lambda row: row[0]
    )
    block = {
        "spec": list(spec.text),
        "names": list(spec.names),
        "nodes": list(extraction.view_nodes),
        "rules": {
            "object": "AOLM: channel sum above its mean at both nodes; the largest 8-connected "
            "component of the last node's mask, intersected with the earlier one's; whole image "
            "when empty",
            "parts": "APPM: windows on the object crop's last map by mean channel sum, greedy NMS "
            f"at IoU {views.NMS_IOU}",
            "tcm": "8x8 blocks of luminance std below STD quantised as JPEG at quality LOW, the "
            "others at HIGH (tcm:LOW:HIGH:STD)",
        },
    }
    if not spec.needs_box:
        return block
    buffer = io.StringIO()
    csv_writer = csv.writer(buffer, lineterminator="\n")
    csv_writer.writerow(("image_id",) + spec.box_columns)
    csv_writer.writerows(rows)
    data = buffer.getvalue().encode()
    fileio.write_text_atomic(fileio.join(out_dir, views.VIEWS_CSV), buffer.getvalue())
    boxes = [row[1:5] for row in rows]
    return {
        **block,
        "csv": {
            "path": views.VIEWS_CSV,
            "rows": len(rows),
            "sha256": hashlib.sha256(data).hexdigest(),
            "num_bytes": len(data),
        },
        "box_statistics": views.box_statistics(boxes),
    }


def _write_quarantine(out_dir: str, results) -> None:
    rows = [row for result in results for row in result["quarantine"]]
    buffer = io.StringIO()
    csv_writer = csv.writer(buffer)
    csv_writer.writerow(["path", "reason"])
    csv_writer.writerows(rows)
    fileio.write_text_atomic(fileio.join(out_dir, QUARANTINE_NAME), buffer.getvalue())


def _summary(
    manifest: manifest_lib.Manifest, results, pending, seconds: float, extracting_seconds: float
) -> dict:
    written = sum(result["num_records"] for result in results)
    processed = sum(len(task.items) for task in pending)
    node_lines = "; ".join(
        f"{node} ({entry.encoding}, {entry.dtype}): {100 * entry.zero_fraction:.1f} % zeros, "
        f"{entry.bytes_per_image / 1024:.1f} KiB/image = "
        f"{entry.bytes_per_image / entry.float32_bytes_per_image:.2f}x float32"
        for node, entry in manifest.nodes.items()
    )
    num_shards = sum(split.num_shards for split in manifest.splits.values())
    this_run = (
        f"this run processed {processed} images in {seconds:.1f} s wall time "
        f"({_rate(processed, extracting_seconds):.2f} images/s while extracting; {len(pending)} "
        "shards redone)"
        if pending
        else "every shard was already complete, so this run changed nothing"
    )
    text = (
        f"make_tfrecords: {written} images written and {manifest.num_quarantined} skipped "
        f"(see {QUARANTINE_NAME}) in {num_shards} shards per node; {this_run}. Per node: "
        f"{node_lines}."
    )
    return {
        "images_written": written,
        "images_skipped": manifest.num_quarantined,
        "images_processed": processed,
        "seconds": seconds,
        "extracting_seconds": extracting_seconds,
        "images_per_second": _rate(processed, extracting_seconds),
        "shards_redone": len(pending),
        "text": text,
    }


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
