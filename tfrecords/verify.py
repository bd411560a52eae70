"""Checks a records directory's shard files against manifest.json: presence, size, sha256 and record
count."""

import concurrent.futures
import csv
import dataclasses
import io

import tensorflow as tf

from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import writer

# sha256 releases the GIL on large buffers, so a few threads hash several shards at disk speed.
HASH_THREADS = 4


@dataclasses.dataclass(frozen=True)
class ShardFile:
    """One shard file as the manifest records it."""

    path: str  # relative to the records directory, "/"-separated
    num_records: int
    sha256: str
    num_bytes: int


@dataclasses.dataclass(frozen=True)
class BadShard:
    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Report:
    records_dir: str
    num_checked: int
    bad: tuple[BadShard, ...]

    @property
    def ok(self) -> bool:
        return not self.bad

    def text(self) -> str:
        lines = [
            f"bad shard: {fileio.join(self.records_dir, shard.path)}: {shard.reason}"
            for shard in self.bad
        ]
        if self.ok:
            lines.append(
                f"verify: all {self.num_checked} shard files in {self.records_dir} "
                f"match {manifest_lib.MANIFEST_NAME}"
            )
        else:
            lines.append(
                f"verify: {len(self.bad)} of {self.num_checked} shard files in {self.records_dir} "
                f"are bad; {rerun_advice(self.records_dir)}"
            )
        return "\n".join(lines)


def rerun_advice(records_dir: str) -> str:
    return (
        f"rerun make-tfrecords with the command that wrote {records_dir}: it rewrites only the "
        "bad shards"
    )


def shard_files(
    manifest: manifest_lib.Manifest, node: str | None = None, split: str | None = None
) -> list[ShardFile]:
    """Every shard file the manifest lists (of one node and/or split when given), in a stable
    order."""
    if node is not None:
        manifest.node(node)  # an unknown name is a user error, not "0 files checked"
    if split is not None:
        manifest.split(split)
    files = []
    for split_name, split_info in sorted(manifest.splits.items()):
        if split is not None and split_name != split:
            continue
        for shard in sorted(split_info.shards, key=lambda shard: shard.index):
            for node_name, file in sorted(shard.files.items()):
                if node is None or node_name == node:
                    files.append(
                        ShardFile(file.path, shard.num_records, file.sha256, file.num_bytes)
                    )
    return files


def file_problem(path: str, num_bytes: int, sha256: str) -> str | None:
    """Why the file at path is not the one recorded (missing, other size, other sha256), or None.

    The size is compared first: it costs one stat, and most damage (a truncated copy, a full disk)
    changes it.
    """
    if not fileio.exists(path):
        return "missing"
    size = fileio.size(path)
    if size != num_bytes:
        return f"{size} bytes, the manifest says {num_bytes}"
    if writer.file_sha256(path) != sha256:
        return "sha256 differs from the manifest (the file changed after it was written)"
    return None


def _record_problem(path: str, expected: int, compression: str) -> str | None:
    """Reads every record (checking each CRC) and compares the count; None when both are right."""
    try:
        found = writer.count_records(path, compression)
    except tf.errors.DataLossError as error:
        return f"unreadable record data ({error.message})"
    if found != expected:
        return f"holds {found} records, the manifest says {expected}"
    return None


def check_file(
    records_dir: str, file: ShardFile, compression: str, count: bool = True
) -> BadShard | None:
    path = fileio.join(records_dir, file.path)
    problem = file_problem(path, file.num_bytes, file.sha256)
    if problem == "missing":
        return BadShard(file.path, problem)
    # Counting after a checksum mismatch says whether the records themselves are damaged.
    records = _record_problem(path, file.num_records, compression) if count else None
    if problem is None and records is None:
        return None
    return BadShard(file.path, "; ".join(reason for reason in (problem, records) if reason))


def verify_records(
    records_dir: str, node: str | None = None, split: str | None = None, count: bool = True
) -> Report:
    """Checks every shard file (of one node and/or split when given) against the manifest.

    Raises errors.RecordsError when there is no manifest: that is a wrong path, not a bad shard.
    """
    manifest = manifest_lib.Manifest.read(records_dir)
    files = shard_files(manifest, node, split)
    compression = manifest.compression
    with concurrent.futures.ThreadPoolExecutor(HASH_THREADS) as pool:
        outcomes = list(
            pool.map(lambda file: check_file(records_dir, file, compression, count), files)
        )
    if node is None and split is None and manifest.views and "csv" in manifest.views:
        outcomes.append(views_csv_problem(records_dir, manifest))
        files.append(manifest.views["csv"]["path"])
    return Report(
        records_dir, len(files), tuple(outcome for outcome in outcomes if outcome is not None)
    )


def views_csv_problem(records_dir: str, manifest: manifest_lib.Manifest) -> BadShard | None:
    """views.csv against the manifest: its bytes, one row per record, every box inside the photo
    with its start before its end."""
    entry = manifest.views["csv"]
    path = fileio.join(records_dir, entry["path"])
    problem = file_problem(path, entry["num_bytes"], entry["sha256"])
    if problem is None:
        rows = list(csv.reader(io.StringIO(fileio.read_text(path))))[1:]
        total = sum(split.num_records for split in manifest.splits.values())
        if len(rows) != total:
            problem = f"holds {len(rows)} rows, the records hold {total} images"
        for row in rows:
            values = [float(value) for value in row[1:]]
            boxes = [values[start : start + 4] for start in range(0, len(values), 4)]
            if any(not (0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1) for y0, x0, y1, x1 in boxes):
                problem = f"a box outside the photo or empty in the row of {row[0]}"
                break
    return None if problem is None else BadShard(entry["path"], problem)
