"""The offline job's local runner: every pending shard in this process, decoding ahead of the CNN.

Images flow through a tf.data pipeline (decode and ladder in parallel, prefetched behind the CNN);
the CNN runs on fixed batches (shard_work.BatchForward) and a writer thread serializes and writes
each batch while the CNN runs the next. SIGINT/SIGTERM stops after the shard in progress, with every
finished shard kept.
"""

import concurrent.futures
import time

import numpy as np
import tqdm

from pipeline import interrupt
from pipeline.offline import progress as progress_lib
from pipeline.offline import shard_work
from tfrecords import codec
from tfrecords import writer


class _BatchRunner:
    """Fills a fixed-size pixel batch, runs the CNN on it and hands the activations to a writer
    thread.

    Serializing and writing a batch (in the thread) overlaps the CNN's next batch, which matters
    most when the CNN runs on a GPU and the CPU would otherwise leave it idle.
    """

    def __init__(
        self, extraction: shard_work.Extraction, backbone, model, progress: progress_lib.Progress
    ):
        self.config = extraction.config
        self.nodes = extraction.nodes
        self.progress = progress
        self.encodings = progress.encodings()
        self.forward = shard_work.BatchForward(backbone, model, extraction)
        self.items = []
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.pending_write = None

    def add(self, item, branches: np.ndarray, photo, builder, bar) -> None:
        self.forward.put(len(self.items), branches, photo)
        self.items.append(item)
        if len(self.items) == self.config.batch_size:
            self.flush(builder, bar)

    def flush(self, builder, bar) -> None:
        if not self.items:
            return
        count = len(self.items)
        activations, boxes = self.forward.run(count)
        if self.encodings is None:  # decided once, from the job's first batch, then kept
            self.encodings = {
                node: codec.choose_encoding(activations[node], self.config.storage_dtype)
                for node in self.nodes
            }
            self.progress.save_encodings(self.encodings)
        self.wait()
        self.pending_write = self.writer.submit(
            builder.add_batch,
            list(self.items),
            activations,
            self.encodings,
            self.config.storage_dtype,
            boxes,
        )
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


def run_shards(
    extraction: shard_work.Extraction, backbone, model, pending, progress: progress_lib.Progress
) -> float:
    """Extracts and writes the pending shards; returns the seconds spent doing so."""
    config = extraction.config
    runner = _BatchRunner(extraction, backbone, model, progress)
    stream = iter(shard_work.decoded_branches(pending, extraction))
    total = sum(len(task.items) for task in pending)
    started = time.perf_counter()
    finished = 0
    with (
        interrupt.StopRequests("make_tfrecords", "after the shard in progress") as stop,
        tqdm.tqdm(
            total=total,
            unit="img",
            disable=not config.progress,
            smoothing=0.1,
            desc="make_tfrecords",
        ) as bar,
    ):
        try:
            for task in pending:
                if (
                    stop.requested
                ):  # the safe point: every finished shard and its progress file are saved
                    break
                builder = shard_work.ShardBuilder.for_task(
                    task, config.out_dir, extraction.nodes, config.compression
                )
                try:
                    for number, item in enumerate(task.items, 1):
                        branches, photo, error = next(stream)
                        if error.numpy():
                            builder.quarantine.append([item.path, error.numpy().decode()])
                            bar.update(1)
                        else:
                            runner.add(item, branches.numpy(), photo, builder, bar)
                        if number % config.batch_size == 0:
                            runner.flush(
                                builder, bar
                            )  # a batch is a fixed slice of the shard: see batch_slices
                    runner.flush(builder, bar)
                    runner.wait()
                    progress.save_shard_result(task.name, builder.finish())
                    finished += 1
                except BaseException:
                    runner.wait_quietly()
                    builder.abort()
                    raise
        except interrupt.Interrupted as stopped:  # a second signal
            raise interrupt.Interrupted(
                f"{stopped}; {kept(finished, pending)}", stopped.signal_number
            ) from None
        except (
            writer.WriteFailed,
            OSError,
        ) as error:  # the shard writers turn TensorFlow's errors into WriteFailed
            if not isinstance(error, writer.WriteFailed):
                error = writer.write_failure(
                    getattr(error, "filename", None) or config.out_dir, error
                )
            raise writer.WriteFailed(
                f"{error}. {kept(finished, pending)}; free space (or make {config.out_dir} "
                f"writable), then rerun the same command to resume"
            ) from None
        finally:
            runner.close()
    if stop.requested:
        raise interrupt.Interrupted(
            f"stopped on {stop.signal_name} after the shard in progress; {kept(finished, pending)}",
            stop.signal_number,
        )
    return time.perf_counter() - started


def kept(finished: int, pending) -> str:
    """What an interrupted run leaves: the shards it finished."""
    return (
        f"{finished} of the {len(pending)} shards this run had to write are complete and kept, "
        f"no partial shard is left"
    )
