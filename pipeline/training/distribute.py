"""The one place a distribution strategy is made, and what training across several machines needs
besides.

`mirrored`: MirroredStrategy over one machine's devices. `multiworker`: MultiWorkerMirroredStrategy
over the cluster in TF_CONFIG, one process per machine, each running the same command. There the
chief alone keeps what is written; every other worker writes the same files under a scratch folder
of its own, removed at the end (saving distributed variables may need every worker, so each one
saves).

Input across workers: validation (and every evaluation) uses DATA sharding, so that each worker's
metrics after the all-reduce are the same. The train split uses DATA sharding too (`--input-sharding
data`: the run is the one a single machine makes, but every worker reads every record) or file
sharding (`file`: each worker reads only its own shard files, 1/N of the bytes, its own seeded
stream).
"""

import functools
import json
import os
import re
import shutil
import tempfile

import tensorflow as tf

from pipeline import errors

# Collective ops can be set up once per process, before TensorFlow runs anything: one strategy for
# the whole run (learning-rate sweep and seeds included).
_multiworker: tf.distribute.Strategy | None = None
_cluster: dict | None = None  # TF_CONFIG's cluster and task, for naming workers in messages
_scratch: str | None = None


def make_strategy(
    kind: str = "mirrored", devices=None, collective_timeout: float | None = None
) -> tf.distribute.Strategy:
    """MirroredStrategy over the given devices, else all GPUs, else the CPU; or the process's
    multi-worker one."""
    if kind == "multiworker":
        return _start_multiworker(collective_timeout)
    if devices:
        return _mirrored(tuple(devices))
    if tf.config.list_logical_devices("GPU"):
        return _mirrored(None)
    return _mirrored(("/cpu:0",))


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple[str, ...] | None) -> tf.distribute.Strategy:
    # One strategy per device set for the whole process: every new MirroredStrategy numbers its
    # collective ops from the same keys, so two of them all-reducing differently shaped gradients in
    # one process (the arms of jpeg-ladder-compare on several GPUs) fail with "Shape mismatch in the
    # collective instance".
    return tf.distribute.MirroredStrategy(devices=None if devices is None else list(devices))


def _start_multiworker(collective_timeout: float | None) -> tf.distribute.Strategy:
    global _multiworker, _cluster
    if _multiworker is not None:
        return _multiworker
    cluster = read_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as error:  # "Collective ops must be configured at program startup"
        raise errors.UserError(
            f"--strategy multiworker must start before TensorFlow runs anything else in the "
            f"process ({error}); run train-block-by-block in a fresh process"
        ) from None
    _multiworker, _cluster = strategy, cluster
    return strategy


def read_tf_config() -> dict:
    """TF_CONFIG's cluster and task, checked: chief and worker tasks only, the task one of them."""
    text = os.environ.get("TF_CONFIG")
    fix = "set it on every worker as docs/training.md (multi-worker training) shows"
    if not text:
        raise errors.UserError(
            f"--strategy multiworker reads the cluster from the TF_CONFIG environment variable, "
            f"which is not set; {fix}"
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        jobs = {job: list(addresses) for job, addresses in cluster.items()}
        task_type, task_index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise errors.UserError(
            f"TF_CONFIG must be JSON with a cluster and a task ({error!r}); {fix}"
        ) from None
    if set(jobs) - {"chief", "worker"} or not jobs.get("worker", []) + jobs.get("chief", []):
        raise errors.UserError(
            f"TF_CONFIG's cluster holds jobs {sorted(jobs)}: --strategy multiworker takes chief "
            f"and worker tasks only; {fix}"
        )
    if task_type not in jobs or not 0 <= task_index < len(jobs[task_type]):
        raise errors.UserError(f"TF_CONFIG's task {task} is not in its cluster ({jobs}); {fix}")
    return {"jobs": jobs, "task": (task_type, task_index)}


def _workers() -> list[tuple[str, int]]:
    """Every task in the order TensorFlow numbers workers: the chief (if named apart) first."""
    jobs = _cluster["jobs"]
    return [(job, index) for job in ("chief", "worker") for index in range(len(jobs.get(job, [])))]


def num_workers() -> int:
    return 1 if _multiworker is None else len(_workers())


def is_chief() -> bool:
    """Whether this process keeps what it writes: always on one machine; in a cluster, the chief
    alone."""
    return _multiworker is None or _multiworker.extended.should_checkpoint


def writable(path: str) -> str:
    """Where this process writes `path`: itself on the chief, the same path under its scratch folder
    elsewhere."""
    global _scratch
    if is_chief():
        return path
    if _scratch is None:
        job, index = _cluster["task"]
        _scratch = tempfile.mkdtemp(prefix=f"jpeg-ladder-{job}{index}-")
    return os.path.join(_scratch, path.replace("://", "/").lstrip("/"))


def remove_scratch() -> None:
    global _scratch
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
        _scratch = None


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """Each replica's part of every global batch of `dataset`.

    Across workers, each worker reads the whole stream and keeps its replicas' part of each batch
    (DATA sharding), so that every step sees the global batch one machine would see, a resumed
    stream skips what was trained, and any number of shards (fewer than the workers too) will do.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def choose_input_sharding(
    requested: str, num_shards: int, workers: int, global_batch: int, replicas: int
) -> tuple[str, str]:
    """How `workers` workers split a train split of `num_shards` shards: (data or file, one line
    saying why).

    `auto` takes file when every worker gets at least one shard (and the global batch splits evenly
    over the replicas), else data; an explicit `file` that cannot be is a ValueError naming the fix.
    """
    shards = f"{num_shards} train shard{'s' if num_shards != 1 else ''}"
    if requested == "data":
        return (
            "data",
            "input sharding: data (as asked: every worker reads every record and keeps its "
            "replicas' part)",
        )
    if num_shards < workers:
        if requested == "file":
            raise errors.UserError(
                f"--input-sharding file gives each worker its own shards, and the records hold "
                f"{shards} for {workers} workers: rerun make-tfrecords with --num-shards "
                f"{workers} or more, or use --input-sharding data"
            )
        return "data", (
            f"input sharding: data ({shards} for {workers} workers: every worker reads every "
            f"record; make-tfrecords --num-shards >= {workers} lets each read only its own)"
        )
    if global_batch % replicas:
        if requested == "file":
            raise errors.UserError(
                f"--input-sharding file splits each worker's batches evenly over the replicas, and "
                f"--batch-size {global_batch} is not a multiple of the {replicas} replicas: pass a "
                f"multiple of {replicas}, or use --input-sharding data"
            )
        return "data", (
            f"input sharding: data (--batch-size {global_batch} does not split evenly over "
            f"{replicas} replicas: every worker reads every record)"
        )
    fewest, most = num_shards // workers, -(-num_shards // workers)
    own = f"{fewest}" if fewest == most else f"{fewest} or {most}"
    return (
        "file",
        f"input sharding: file ({shards} over {workers} workers: each reads its own {own})",
    )


def distribute_training_dataset(
    strategy: tf.distribute.Strategy,
    make_dataset,
    global_batch: int,
    start_step: int,
    by_files: bool,
):
    """Each replica's part of every global batch of a repeated training stream, from step
    `start_step` on.

    `make_dataset(batch_size, start_batch, file_shard)` builds the stream: batches of `batch_size`,
    the first `start_batch` of them skipped, read from the shards `file_shard` = (n, i) names (None:
    every shard). Without `by_files` every worker builds the global stream and keeps its replicas'
    part (DATA sharding). With it, worker i of N reads shards i, i + N, ... into batches of one
    replica's share, which its replicas take in turn; its stream is repeated, so a worker with fewer
    records than another simply starts its next pass sooner, and every worker runs the same number
    of steps.
    """
    if not by_files:
        return distribute_dataset(strategy, make_dataset(global_batch, start_step, None))
    # The file list is split in the reader, not by tf.data's FILE auto-shard policy: the stream the
    # reader builds is then the very one the worker trains on, so its seeded order is a function of
    # the worker's own files and `start_batch` counts the worker's own batches (a resume skips
    # exactly what it trained on). FILE auto-sharding rewrites the pipeline after the reader and
    # then cuts global batches into replica batches, so the reader's skip would count in batches the
    # worker never sees.
    local_replicas = len(strategy.extended.worker_devices)

    def worker_stream(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(
            context.get_per_replica_batch_size(global_batch),
            start_step * local_replicas,
            (context.num_input_pipelines, context.input_pipeline_id),
        )

    return strategy.distribute_datasets_from_function(worker_stream)


def check_agreement(strategy: tf.distribute.Strategy, what: str, values: tuple[int, ...]) -> None:
    """Raises unless every worker holds the same `values`; a barrier across workers too.

    Workers must take the same decisions (where to resume, when a stage ends) or they wait on each
    other's collectives forever; they read them from the chief's LOGDIR, so a LOGDIR not shared
    disagrees.
    """
    if num_workers() == 1:
        return
    local = tf.constant([values], tf.int64)
    gathered = tf.function(lambda: strategy.gather(strategy.run(lambda: local), axis=0))().numpy()
    if (gathered != gathered[0]).any():
        raise errors.UserError(
            f"the workers disagree on {what} "
            f"({sorted({tuple(row) for row in gathered.tolist()})}): "
            f"every worker must run the same command on one LOGDIR that all of them read (a shared "
            f"filesystem or an object store); start them all again"
        )


# What a collective op raises on the workers that remain when a peer dies, stalls or is cut off.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


def is_peer_failure(error: tf.errors.OpError) -> bool:
    """Whether `error` (one of PEER_ERRORS) came from the cluster, not from, say, a remote file
    read."""
    return "ollective" in error.message or "/job:" in error.message


def peer_failure_message(
    error: tf.errors.OpError, logdir: str, collective_timeout: float | None
) -> str:
    """One line for a lost peer: which worker (when TensorFlow names it) and how to go on."""
    own = _cluster["task"]
    named = {
        (job, int(index))
        for job, index in re.findall(r"/job:(chief|worker)/replica:\d+/task:(\d+)", error.message)
    } - {own}
    order = _workers()
    lost = " and ".join(_worker_name(task) for task in sorted(named) if task in order)
    if isinstance(error, tf.errors.DeadlineExceededError):
        what = (
            f"no answer from the other workers within --collective-timeout {collective_timeout:g} s"
        )
    else:
        what = f"lost {lost}" if lost else "lost contact with another worker"
    return (
        f"{what} ({type(error).__name__} at a collective op on {_worker_name(own)}); the "
        f"{len(order)} workers cannot go on without each other: start every worker again with the "
        "same command and TF_CONFIG, and "
        f"the run resumes from the last checkpoint in {logdir}"
    )


def _worker_name(task: tuple[str, int]) -> str:
    number = _workers().index(task)
    return (
        f"worker {number} at "
        f"{_cluster['jobs'][task[0]][task[1]]}{', the chief' if number == 0 else ''}"
    )
