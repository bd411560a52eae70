"""The offline stage: decode, build the JPEG ladder, run the frozen CNN once for all nodes, write shards.

Streaming and restartable: images flow through a tf.data pipeline (decode and ladder in parallel,
prefetched behind the CNN), and each shard is renamed into place only when complete and verified.
Per-shard progress lives in OUT/.progress/, so a killed job rerun with the same command redoes only
the shards that were not finished and ends with output identical to an uninterrupted run.

Every path (images, --labels-csv, --weights, a savedmodel: backbone, OUT) may be local or a URL that
tf.io.gfile reads (gs://, s3://, ...); all file access goes through tfrecords.fileio. A local OUT is locked
against a second job; an object store has no lock, so there keeping one job per OUT is up to the user.
"""

import concurrent.futures
import contextlib
import csv
import dataclasses
import hashlib
import io
import math
import sys
import time

import keras
import numpy as np
import tensorflow as tf
import tqdm

from bottlenecks import cut
from bottlenecks import registry
from bottlenecks import sparsity
from pipeline import config as config_lib
from pipeline.offline import images
from pipeline import interrupt
from pipeline.offline import ladder
from tfrecords import codec
from tfrecords import example
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import shards
from tfrecords import verify
from tfrecords import writer

PROGRESS_DIR = ".progress"
QUARANTINE_NAME = "quarantine.csv"
TIMINGS_NAME = "timings.json"


@dataclasses.dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    num_shards: int
    items: tuple[images.ImageItem, ...]

    @property
    def name(self) -> str:
        return shards.shard_filename(self.split, self.index, self.num_shards)


def check_paths(config: config_lib.ExtractConfig) -> None:
    """Fails in one line on a URL whose file system TensorFlow lacks; each Beam worker calls it too, since it
    also loads tensorflow-io's file systems (s3://, hdfs://) into the process."""
    saved_model = config.backbone.startswith(f"{registry.SAVEDMODEL}:")  # hub: handles are not files
    for flag, path in (("--out-dir", config.out_dir), ("--data-dir", config.data_dir),
                       ("--labels-csv", config.labels_csv), ("--weights", config.weights),
                       ("--backbone", config.backbone if saved_model else None)):
        if path:
            fileio.check_scheme(path.removeprefix(f"{registry.SAVEDMODEL}:"), f"{flag} {path}")


def index_images(config: config_lib.ExtractConfig) -> images.ImageIndex:
    if config.data_dir is not None:
        return images.index_directory(config.data_dir, config.validation_percent, config.test_percent)
    return images.index_csv(config.labels_csv, config.validation_percent, config.test_percent)


def plan(index: images.ImageIndex, config: config_lib.ExtractConfig,
         example_shapes: dict[str, tuple[int, ...]]) -> list[ShardTask]:
    """Deterministic shard assignment of every image, per split."""
    largest = max(len(index.split(split)) for split in index.split_names)
    tasks = []
    for split in index.split_names:
        items = index.split(split)
        if config.num_shards is not None:
            num_shards = max(1, round(config.num_shards * len(items) / largest))
        else:
            dense_bytes = max(4 * math.prod(shape) for shape in example_shapes.values())
            num_shards = shards.num_shards_for(len(items), dense_bytes, int(config.shard_size_mb * 2**20))
        chunks = shards.plan_shards([item.image_id for item in items], num_shards)
        tasks.extend(ShardTask(split, number, len(chunks), tuple(items[i] for i in chunk))
                     for number, chunk in enumerate(chunks))
    return tasks


def _job_identity(config, backbone, nodes, input_size, index) -> dict:
    """Everything that determines the output; a rerun must match it to resume."""
    if backbone.source == registry.KERAS:
        weights = registry.weights_identity(config.weights)
        if weights["kind"] == "file":
            weights["sha256"] = writer.file_sha256(config.weights)
    else:  # the SavedModel's files are its weights
        weights = registry.model_identity(backbone)
        weights["sha256"] = directory_sha256(registry.model_path(backbone))
    listing = hashlib.sha256("\n".join(f"{item.image_id},{item.label},{item.split}"
                                       for item in index.items).encode()).hexdigest()
    # Only feature vector models have an input range: keeping the key out otherwise lets jobs started
    # before it existed resume.
    model_input = {"input_range": list(backbone.input_range)} if backbone.input_range is not None else {}
    # Named only when not the default, so that the jobs written before storage dtypes existed (all float32)
    # still resume; a rerun with another dtype than the output's is then refused like any changed setting.
    dtype = {} if config.storage_dtype == codec.FLOAT32 else {"storage_dtype": config.storage_dtype}
    return {
        "backbone": backbone.name, **model_input, "weights": weights, "nodes": list(nodes),
        "input_size": input_size, "central_crop": config.central_crop,
        "qualities": list(config.qualities), "num_shards": config.num_shards,
        "shard_size_mb": config.shard_size_mb, "validation_percent": config.validation_percent,
        "test_percent": config.test_percent,
        "compression": config.compression, "batch_size": config.batch_size,
        "seed": config.seed if weights["kind"] == "none" else None, "images": listing, **dtype,
    }


def directory_sha256(directory: str) -> str:
    """One sha256 over a folder's files (a SavedModel): their relative paths and contents, in sorted order."""
    digest = hashlib.sha256()
    for root, folders, files in fileio.walk(directory):
        folders.sort()
        for name in sorted(files):
            path = fileio.join(root, name)
            digest.update(f"{fileio.relpath(path, directory)}\0{writer.file_sha256(path)}\n".encode())
    return digest.hexdigest()


class _Progress:
    """The job's state on disk: its identity, node encodings and one result file per shard."""

    def __init__(self, out_dir: str):
        self.directory = fileio.join(out_dir, PROGRESS_DIR)
        fileio.makedirs(self.directory)

    def _path(self, name: str) -> str:
        return fileio.join(self.directory, name)

    def _read(self, name: str):
        return fileio.read_json(self._path(name))

    def start(self, identity: dict, out_dir: str) -> None:
        stored = self._read("job.json")
        if stored is None:
            fileio.write_json_atomic(self._path("job.json"), identity)
        elif stored != identity:
            changed = sorted(key for key in identity.keys() | stored.keys()
                             if identity.get(key) != stored.get(key))
            raise ValueError(
                f"{out_dir} holds the output of a different job (it differs in: {', '.join(changed)}). "
                f"Rerun with the original settings to resume it, or choose another --out-dir.")

    def encodings(self):
        return self._read("encodings.json")

    def save_encodings(self, encodings: dict) -> None:
        fileio.write_json_atomic(self._path("encodings.json"), encodings)

    def shard_result(self, task: ShardTask):
        return self._read(task.name + ".json")

    def save_shard_result(self, task: ShardTask, result: dict) -> None:
        fileio.write_json_atomic(self._path(task.name + ".json"), result)


def _is_complete(result, out_dir: str) -> bool:
    """Every file of the shard is there as written (same size, then same sha256), so a damaged one is redone."""
    return result is not None and all(
        verify.file_problem(fileio.join(out_dir, file["path"]), file["num_bytes"], file["sha256"]) is None
        for file in result["files"].values())


def _pending(tasks, progress, out_dir: str) -> list[ShardTask]:
    # Hashing every finished shard is a full read of the output; threads overlap it (sha256 frees the GIL).
    with concurrent.futures.ThreadPoolExecutor(verify.HASH_THREADS) as pool:
        complete = list(pool.map(lambda task: _is_complete(progress.shard_result(task), out_dir), tasks))
    return [task for task, done in zip(tasks, complete) if not done]


def _decoded_branches(tasks, input_size, qualities, central_crop) -> tf.data.Dataset:
    """(branch images float32 [B, S, S, 3], error message) per image, in order, decoded in parallel."""

    def load(path):
        try:
            return ladder.load_rgb(path.numpy().decode()), ""
        except ladder.BadImage as error:
            return np.zeros((8, 8, 3), np.uint8), str(error)

    def decode_and_ladder(path):
        image, error = tf.py_function(load, [path], [tf.uint8, tf.string])
        image.set_shape([None, None, 3])
        return ladder.branch_images(image, input_size, qualities, central_crop), error

    paths = [item.path for task in tasks for item in task.items]
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    dataset = dataset.map(decode_and_ladder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def batch_slices(task: ShardTask, batch_size: int) -> list[tuple[images.ImageItem, ...]]:
    """The CNN batches of a shard: consecutive slices of its items, whatever gets quarantined.

    Fixed by the plan alone, so every runner, and every rerun, puts each image in the same batch at the
    same place: the activations then do not depend on how the work was scheduled.
    """
    return [task.items[start:start + batch_size] for start in range(0, len(task.items), batch_size)]


def serialize_batch(batch_items, activations: dict, encodings: dict, dtype: str) -> tuple[dict, dict]:
    """One batch's records per node ({node: [bytes]}, in item order, values in dtype) and its zero counts."""
    records, zeros = {}, {}
    for node, values in activations.items():
        zeros[node] = sparsity.ZeroCounter()
        zeros[node].update(values)
        records[node] = [example.serialize(item.image_id, item.label, bottleneck, encodings[node], dtype)
                         for item, bottleneck in zip(batch_items, values)]
    return records, zeros


class _ShardBuilder:
    """Writes one shard of every node: the open writers, its quarantine and its statistics."""

    def __init__(self, task: ShardTask, out_dir: str, nodes, compression: str):
        self.task = task
        self.out_dir = out_dir
        self.writers = {}
        try:
            for node in nodes:
                self.writers[node] = writer.ShardWriter(fileio.join(out_dir, node, task.name), compression or None)
        except BaseException:
            self.abort()  # the writers already opened must not leave their temporary files
            raise
        self.quarantine = []
        self.zeros = {node: sparsity.ZeroCounter() for node in nodes}
        self.num_records = 0

    def add_batch(self, batch_items, activations: dict, encodings: dict, dtype: str) -> None:
        self.add_records(*serialize_batch(batch_items, activations, encodings, dtype))

    def add_records(self, records: dict, zeros: dict) -> None:
        """Appends one batch's serialized records ({node: [bytes]}) and zero counts ({node: ZeroCounter})."""
        for node, serialized in records.items():
            self.zeros[node].merge(zeros[node])
            for record in serialized:
                self.writers[node].write(record)
        self.num_records += len(next(iter(records.values())))

    def finish(self) -> dict:
        files = {}
        for node, shard_writer in self.writers.items():
            info = shard_writer.close()
            files[node] = {"path": fileio.relpath(info.path, self.out_dir),
                           "sha256": info.sha256, "num_bytes": info.num_bytes}
        return {"split": self.task.split, "index": self.task.index, "num_records": self.num_records,
                "files": files, "quarantine": self.quarantine,
                "zeros": {node: [counter.zeros, counter.total] for node, counter in self.zeros.items()}}

    def abort(self) -> None:
        for shard_writer in self.writers.values():
            shard_writer.abort()


def job_backbone(config: config_lib.ExtractConfig) -> registry.Backbone:
    """The job's backbone: a keras.applications one, or a hub: or savedmodel: model with its input range."""
    return registry.get_backbone(config.backbone, config.input_range)


def build_model(config: config_lib.ExtractConfig, backbone, input_size: int):
    """The backbone with the job's weights; random ones come from config.seed, the same on every run and worker."""
    if backbone.source == registry.KERAS and registry.weights_identity(config.weights)["kind"] == "none":
        keras.utils.set_random_seed(config.seed)
    return registry.build(backbone, config.weights, input_size, local_weights(config.weights))


def local_weights(weights: str | dict | None) -> str | None:
    """The local copy Keras loads a --weights URL from (Keras reads local files only), made once per process.

    weights is the flag's value or the identity a manifest records. None for imagenet, none, local files,
    which Keras reads as they are, and for a URL that is not there, which the registry then reports.
    """
    if isinstance(weights, dict):
        weights = weights.get("path") if weights.get("kind") == "file" else None
    if weights is None or not fileio.is_remote(weights) or not fileio.isfile(weights):
        return None
    return fileio.local_copy(weights)


def _check_weights_file(config: config_lib.ExtractConfig, backbone) -> None:
    """A --weights file that is not there is one line here, before anything reads it."""
    if backbone.source == registry.KERAS and registry.weights_identity(config.weights)["kind"] == "file" \
            and not fileio.isfile(config.weights):
        raise registry.missing_weights_file(config.weights, backbone)


def _output_lock(out_dir: str):
    """The lock that keeps a second job off a local out_dir; none for an object store, which has no lock."""
    if not fileio.is_remote(out_dir):
        return writer.OutputLock(out_dir)
    print(f"make_tfrecords: {out_dir} is not locked (object stores have no lock): starting two jobs on the same "
          f"output directory is up to you; every shard is still written whole or not at all", file=sys.stderr)
    return contextlib.nullcontext()


def make_tfrecords(config: config_lib.ExtractConfig, run_shards=None) -> dict:
    """Runs (or resumes) the offline stage and returns its summary; see the module docstring.

    run_shards(config, backbone, model, nodes, input_size, pending, progress) extracts and writes the
    pending shards and returns its seconds: this process's _run by default, or the Beam runner's.
    """
    started = time.perf_counter()
    check_paths(config)
    backbone = job_backbone(config)
    nodes = registry.check_nodes(backbone, config.nodes or backbone.default_stages)
    input_size = registry.check_input_size(backbone, config.input_size)
    index = index_images(config)
    _check_weights_file(config, backbone)
    fileio.makedirs(config.out_dir)
    with _output_lock(config.out_dir):
        identity = _job_identity(config, backbone, nodes, input_size, index)
        # Built before the job is recorded: a model that does not build (wrong --input-size, say) must not
        # make the corrected command look like another job.
        model = build_model(config, backbone, input_size)
        progress = _Progress(config.out_dir)
        progress.start(identity, config.out_dir)
        num_branches = 1 + len(config.qualities)
        example_shapes = {node: (num_branches,) + shape for node, shape in cut.node_shapes(model, nodes).items()}
        tasks = plan(index, config, example_shapes)
        pending = _pending(tasks, progress, config.out_dir)
        for node in nodes:
            fileio.makedirs(fileio.join(config.out_dir, node))
            writer.remove_temporaries(fileio.join(config.out_dir, node))
        extracting_seconds = 0.0
        if pending:
            extracting_seconds = (run_shards or _run)(config, backbone, model, nodes, input_size, pending, progress)
        results = [progress.shard_result(task) for task in tasks]
        manifest = _manifest(config, identity, index, example_shapes, progress.encodings(), results)
        manifest.write(config.out_dir)
        _write_quarantine(config.out_dir, results)
        summary = _summary(manifest, results, pending, time.perf_counter() - started, extracting_seconds)
        fileio.write_json_atomic(fileio.join(config.out_dir, TIMINGS_NAME), summary)
    print(summary["text"])
    return summary


class BatchForward:
    """The frozen CNN at every node in one pass over a fixed-size, zero-padded batch; both runners use it.

    A fixed batch shape means one trace and the same kernels for every batch, so a resumed shard, or
    a Beam worker given the same batch, computes exactly what an uninterrupted local run would.
    """

    def __init__(self, backbone, model, nodes, batch_size: int, num_branches: int, input_size: int):
        self.nodes = nodes
        self.num_branches = num_branches
        extract_model = cut.extractor(model, backbone, nodes)
        self.pixels = np.zeros((batch_size * num_branches, input_size, input_size, 3), np.float32)  # reused

        @tf.function(input_signature=[tf.TensorSpec(self.pixels.shape, tf.float32)])
        def forward(pixels):
            return extract_model(pixels, training=False)

        self._forward = forward

    def put(self, slot: int, branches: np.ndarray) -> None:
        """Places one image's branches at position slot of the batch."""
        self.pixels[slot * self.num_branches:(slot + 1) * self.num_branches] = branches

    def run(self, count: int) -> dict:
        """{node: [count, branches, ...]} for the first count images; the rest of the batch is padding."""
        self.pixels[count * self.num_branches:] = 0.0  # padding: the same input on every run
        outputs = self._forward(self.pixels)
        return {node: outputs[node].numpy()[:count * self.num_branches].reshape(
            (count, self.num_branches) + tuple(outputs[node].shape[1:])) for node in self.nodes}


def verify_output(out_dir: str) -> verify.Report:
    """Checks every shard a finished job wrote against its manifest and prints one line per bad shard."""
    report = verify.verify_records(out_dir)
    print(report.text())
    return report


class _BatchRunner:
    """Fills a fixed-size pixel batch, runs the CNN on it and hands the activations to a writer thread.

    Serializing and writing a batch (in the thread) overlaps the CNN's next batch, which matters
    most when the CNN runs on a GPU and the CPU would otherwise leave it idle.
    """

    def __init__(self, config, backbone, model, nodes, input_size, progress):
        self.config = config
        self.nodes = nodes
        self.num_branches = 1 + len(config.qualities)
        self.progress = progress
        self.encodings = progress.encodings()
        self.forward = BatchForward(backbone, model, nodes, config.batch_size, self.num_branches, input_size)
        self.items = []
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pending_write = None

    def add(self, item, branches: np.ndarray, builder, bar) -> None:
        self.forward.put(len(self.items), branches)
        self.items.append(item)
        if len(self.items) == self.config.batch_size:
            self.flush(builder, bar)

    def flush(self, builder, bar) -> None:
        if not self.items:
            return
        count = len(self.items)
        activations = self.forward.run(count)
        if self.encodings is None:  # decided once, from the job's first batch, then kept
            self.encodings = {node: codec.choose_encoding(activations[node], self.config.storage_dtype)
                              for node in self.nodes}
            self.progress.save_encodings(self.encodings)
        self.wait()
        self.pending_write = self.writer.submit(builder.add_batch, list(self.items), activations, self.encodings,
                                                self.config.storage_dtype)
        self.pending_write.add_done_callback(lambda _: bar.update(count))
        self.items.clear()

    def wait(self) -> None:
        """Waits for the batch being written; its errors surface here."""
        if self.pending_write is not None:
            self.pending_write.result()
            self.pending_write = None

    def wait_quietly(self) -> None:
        """On the way out after an error: let the writer finish before its files are removed."""
        if self.pending_write is not None:
            concurrent.futures.wait([self.pending_write])
            self.pending_write = None

    def close(self) -> None:
        self.writer.shutdown(wait=True)


def _run(config, backbone, model, nodes, input_size, pending, progress) -> float:
    """Extracts and writes the pending shards; returns the seconds spent doing so."""
    runner = _BatchRunner(config, backbone, model, nodes, input_size, progress)
    stream = iter(_decoded_branches(pending, input_size, config.qualities, config.central_crop))
    total = sum(len(task.items) for task in pending)
    started = time.perf_counter()
    finished = 0
    with interrupt.StopRequests("make_tfrecords", "after the shard in progress") as stop, \
            tqdm.tqdm(total=total, unit="img", disable=not config.progress, smoothing=0.1,
                      desc="make_tfrecords") as bar:
        try:
            for task in pending:
                if stop.requested:  # the safe point: every finished shard and its progress file are saved
                    break
                builder = _ShardBuilder(task, config.out_dir, nodes, config.compression)
                try:
                    for number, item in enumerate(task.items, 1):
                        branches, error = next(stream)
                        if error.numpy():
                            builder.quarantine.append([item.path, error.numpy().decode()])
                            bar.update(1)
                        else:
                            runner.add(item, branches.numpy(), builder, bar)
                        if number % config.batch_size == 0:
                            runner.flush(builder, bar)  # a batch is a fixed slice of the shard: see batch_slices
                    runner.flush(builder, bar)
                    runner.wait()
                    progress.save_shard_result(task, builder.finish())
                    finished += 1
                except BaseException:
                    runner.wait_quietly()
                    builder.abort()
                    raise
        except interrupt.Interrupted as stopped:  # a second signal
            raise interrupt.Interrupted(f"{stopped}; {_kept(finished, pending)}", stopped.signal_number) from None
        except (writer.WriteFailed, OSError) as error:  # the shard writers turn TensorFlow's errors into WriteFailed
            if not isinstance(error, writer.WriteFailed):
                error = writer.write_failure(getattr(error, "filename", None) or config.out_dir, error)
            raise writer.WriteFailed(f"{error}. {_kept(finished, pending)}; free space (or make {config.out_dir} "
                                     f"writable), then rerun the same command to resume") from None
        finally:
            runner.close()
    if stop.requested:
        raise interrupt.Interrupted(f"stopped on {stop.signal_name} after the shard in progress; "
                                    f"{_kept(finished, pending)}", stop.signal_number)
    return time.perf_counter() - started


def _kept(finished: int, pending) -> str:
    return (f"{finished} of the {len(pending)} shards this run had to write are complete and kept, "
            f"no partial shard is left")


def _manifest(config, identity, index, example_shapes, encodings, results) -> manifest_lib.Manifest:
    nodes = identity["nodes"]
    encodings = encodings or {node: codec.DENSE for node in nodes}  # every image was quarantined
    shards_of = {}
    for result in results:
        shards_of.setdefault(result["split"], []).append(manifest_lib.ShardInfo(
            index=result["index"], num_records=result["num_records"],
            files={node: manifest_lib.FileInfo(**file) for node, file in result["files"].items()}))
    splits = {split: manifest_lib.SplitInfo(sum(shard.num_records for shard in shard_list), tuple(shard_list))
              for split, shard_list in shards_of.items()}
    node_entries = {}
    num_records = sum(result["num_records"] for result in results)
    for node in nodes:
        zeros = sum(result["zeros"][node][0] for result in results)
        total = sum(result["zeros"][node][1] for result in results)
        stored = sum(result["files"][node]["num_bytes"] for result in results)
        node_entries[node] = manifest_lib.NodeInfo(
            shape=tuple(example_shapes[node]), dtype=config.storage_dtype, encoding=encodings[node],
            zero_fraction=zeros / total if total else 0.0,
            bytes_per_image=stored / num_records if num_records else 0.0,
            float32_bytes_per_image=4 * math.prod(example_shapes[node]))
    run_config = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in dataclasses.asdict(config).items()
                  # Where the output lives and how it was watched do not describe it.
                  if key not in ("out_dir", "progress")}
    return manifest_lib.Manifest(
        nodes=node_entries, splits=splits, compression=config.compression, backbone=identity["backbone"],
        weights=identity["weights"], input_size=identity["input_size"],
        input_range=tuple(identity["input_range"]) if "input_range" in identity else None,
        central_crop=config.central_crop, qualities=tuple(config.qualities),
        branches=config_lib.branch_names(config.qualities), class_names=tuple(index.class_names),
        num_quarantined=sum(len(result["quarantine"]) for result in results), config=run_config)


def _write_quarantine(out_dir: str, results) -> None:
    rows = [row for result in results for row in result["quarantine"]]
    buffer = io.StringIO()
    csv_writer = csv.writer(buffer)
    csv_writer.writerow(["path", "reason"])
    csv_writer.writerows(rows)
    fileio.write_text_atomic(fileio.join(out_dir, QUARANTINE_NAME), buffer.getvalue())


def _summary(manifest: manifest_lib.Manifest, results, pending, seconds: float, extracting_seconds: float) -> dict:
    written = sum(result["num_records"] for result in results)
    processed = sum(len(task.items) for task in pending)
    node_lines = "; ".join(
        f"{node} ({entry.encoding}, {entry.dtype}): {100 * entry.zero_fraction:.1f} % zeros, "
        f"{entry.bytes_per_image / 1024:.1f} KiB/image = "
        f"{entry.bytes_per_image / entry.float32_bytes_per_image:.2f}x float32"
        for node, entry in manifest.nodes.items())
    num_shards = sum(split.num_shards for split in manifest.splits.values())
    this_run = (f"this run processed {processed} images in {seconds:.1f} s wall time "
                f"({_rate(processed, extracting_seconds):.2f} images/s while extracting; {len(pending)} shards "
                f"redone)" if pending else "every shard was already complete, so this run changed nothing")
    text = (f"make_tfrecords: {written} images written and {manifest.num_quarantined} skipped "
            f"(see {QUARANTINE_NAME}) in {num_shards} shards per node; {this_run}. Per node: {node_lines}.")
    return {"images_written": written, "images_skipped": manifest.num_quarantined,
            "images_processed": processed, "seconds": seconds,
            "extracting_seconds": extracting_seconds,
            "images_per_second": _rate(processed, extracting_seconds),
            "shards_redone": len(pending), "text": text}


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0
