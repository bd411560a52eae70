"""Reads and atomically writes manifest.json, the index of a records directory's nodes, splits and shards."""

import json
import os

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def write_json_atomic(path: str, obj) -> None:
    """Writes obj as JSON so that readers see either the old file or the new one, never half of one."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(obj, file, sort_keys=True, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_json(path: str):
    """The JSON content of path, or None when there is no such file (yet)."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def read_manifest(records_dir: str) -> dict:
    path = os.path.join(records_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {records_dir}: run make_tfrecords first, or point to the --out-dir it wrote")
    with open(path, encoding="utf-8") as file:
        try:
            manifest = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): rerun make_tfrecords to rewrite it") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {manifest.get('format_version')!r}, this reader expects "
                         f"{FORMAT_VERSION}: rerun make_tfrecords with this version of the code")
    return manifest


def node_info(manifest: dict, node: str) -> dict:
    """{"shape": [branches, ...], "dtype": ..., "encoding": ...} of one stored node."""
    nodes = manifest.get("nodes", {})
    if node not in nodes:
        raise ValueError(f"node {node!r} is not in the records; available nodes: {sorted(nodes)}")
    return nodes[node]


def split_info(manifest: dict, split: str) -> dict:
    """{"num_records": ..., "shards": [...]} of one split."""
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ValueError(f"split {split!r} is not in the records; available splits: {sorted(splits)}")
    return splits[split]


def shard_paths(records_dir: str, manifest: dict, node: str, split: str) -> list[str]:
    """Paths of one node's shards of one split, in shard order."""
    node_info(manifest, node)
    paths = []
    for shard in sorted(split_info(manifest, split)["shards"], key=lambda shard: shard["index"]):
        if node not in shard["files"]:
            raise ValueError(f"shard {shard['index']} of split {split!r} has no file for node {node!r}: "
                             "the manifest is incomplete, rerun make_tfrecords to finish the job")
        paths.append(os.path.join(records_dir, shard["files"][node]["path"]))
    return paths
