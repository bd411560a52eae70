"""The offline job's resume state in OUT/.progress/: its identity, node encodings and one result per
shard.

A shard counts as done when its result file is there and every file it names is on disk as written
(same size, then same sha256), so a damaged or missing shard is redone by the next run of the same
command.
"""

import concurrent.futures

from pipeline import errors
from tfrecords import fileio
from tfrecords import verify

PROGRESS_DIR = ".progress"
JOB_NAME = "job.json"
ENCODINGS_NAME = "encodings.json"


class Progress:
    """What a job has finished, kept under out_dir so that a rerun (or another worker) can read
    it."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.directory = fileio.join(out_dir, PROGRESS_DIR)
        fileio.makedirs(self.directory)

    def _path(self, name: str) -> str:
        return fileio.join(self.directory, name)

    def start(self, identity: dict) -> None:
        """Records the job's identity, or checks it against the one recorded: a different job is
        refused."""
        stored = fileio.read_json(self._path(JOB_NAME))
        if stored is None:
            fileio.write_json_atomic(self._path(JOB_NAME), identity)
        elif stored != identity:
            changed = sorted(
                key
                for key in identity.keys() | stored.keys()
                if identity.get(key) != stored.get(key)
            )
            raise errors.UserError(
                f"{self.out_dir} holds the output of a different job (it differs in: "
                f"{', '.join(changed)}). Rerun with the original settings to resume it, or choose "
                "another --out-dir."
            )

    def encodings(self) -> dict | None:
        """Each node's encoding, chosen from the job's first batch; None before that."""
        return fileio.read_json(self._path(ENCODINGS_NAME))

    def save_encodings(self, encodings: dict) -> None:
        fileio.write_json_atomic(self._path(ENCODINGS_NAME), encodings)

    def shard_result(self, name: str) -> dict | None:
        return fileio.read_json(self._path(name + ".json"))

    def save_shard_result(self, name: str, result: dict) -> None:
        fileio.write_json_atomic(self._path(name + ".json"), result)

    def is_complete(self, name: str) -> bool:
        """Every file of the shard is there as written (same size, then same sha256)."""
        result = self.shard_result(name)
        return result is not None and all(
            verify.file_problem(
                fileio.join(self.out_dir, file["path"]), file["num_bytes"], file["sha256"]
            )
            is None
            for file in result["files"].values()
        )

    def pending(self, tasks) -> list:
        """The tasks whose shard is not complete."""
        # Hashing every finished shard is a full read of the output; threads overlap it (sha256
        # frees the GIL).
        with concurrent.futures.ThreadPoolExecutor(verify.HASH_THREADS) as pool:
            complete = list(pool.map(lambda task: self.is_complete(task.name), tasks))
        return [task for task, done in zip(tasks, complete) if not done]
