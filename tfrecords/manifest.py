"""manifest.json, the index of a records directory: its schema as frozen dataclasses, read and
written here.

Manifest
  format_version, compression                       how to read the files
  nodes: {node: NodeInfo}                           shape [branches, ...], storage dtype, encoding,
                                                    statistics
  splits: {split: SplitInfo}                        record count and shards
    shards: [ShardInfo]                             index, record count, per node a FileInfo
  backbone, weights, input_size, input_range,       what produced the bottlenecks (the offline stage
  central_crop, qualities, branches, class_names,   fills these; a bare storage manifest may omit
                                                    them)
  config,
  num_quarantined
  views                                             with views: spec, nodes, rules, views.csv,
                                                    box statistics
  codecs                                            with codecs other than JPEG: {codec: qualities}
"""

import dataclasses
import json

from tfrecords import errors
from tfrecords import fileio

MANIFEST_NAME = "manifest.json"
# A manifest states the oldest format that describes it, so records any earlier reader can read
# still say 1:   1  every node's values are float32   2  some node's values are float16 or bfloat16
# (a version-1 reader would refuse them anyway, by dtype)
FORMAT_VERSION = 1
REDUCED_DTYPE_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclasses.dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the records directory, with forward slashes
    sha256: str
    num_bytes: int


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    index: int
    num_records: int
    files: dict[str, FileInfo]  # per node


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    num_records: int
    shards: tuple[ShardInfo, ...]

    @property
    def num_shards(self) -> int:
        return len(self.shards)


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    shape: tuple[int, ...]  # [branches, *activation shape]
    encoding: str
    dtype: str = (
        "float32"  # how values are stored (float32, float16 or bfloat16); they are read as float32
    )
    zero_fraction: float | None = None
    bytes_per_image: float | None = None
    float32_bytes_per_image: int | None = None

    @property
    def num_branches(self) -> int:
        return self.shape[0]


@dataclasses.dataclass(frozen=True)
class Manifest:
    nodes: dict[str, NodeInfo]
    splits: dict[str, SplitInfo]
    compression: str = ""
    format_version: int = FORMAT_VERSION  # as read; a manifest is written with version_for(nodes)
    backbone: str | None = None  # a keras.applications name, savedmodel:/path or hub:HANDLE
    # {"kind": imagenet | file | none | savedmodel | hub[, "path", "sha256"]}; hub models also have
    # "handle".
    weights: dict | None = None
    input_size: int | None = None
    input_range: tuple[float, float] | None = (
        None  # the pixel values a savedmodel: or hub: model took
    )
    central_crop: float = 1.0
    qualities: tuple[int, ...] = ()  # the JPEG ladder's
    # The other codecs' ladders, {codec: [qualities]} (pipeline.offline.codecs); None: JPEG's alone.
    codecs: dict | None = None
    branches: tuple[str, ...] = ()  # branch names: original, q10, ...
    class_names: tuple[str, ...] = ()
    num_quarantined: int = 0
    config: dict = dataclasses.field(default_factory=dict)  # the offline stage's settings
    # With views (pipeline.offline.views): the spec, the view nodes, the rules, views.csv and the
    # boxes' statistics.
    views: dict | None = None
    # Where the manifest was read from: the records directory its shard paths are relative to (not
    # written).
    directory: str | None = dataclasses.field(default=None, compare=False)

    # Reading -----------------------------------------------------------------------------------

    def node(self, node: str) -> NodeInfo:
        if node not in self.nodes:
            raise errors.RecordsError(
                f"node {node!r} is not in the records; available nodes: {sorted(self.nodes)}"
            )
        return self.nodes[node]

    def split(self, split: str) -> SplitInfo:
        if split not in self.splits:
            raise errors.RecordsError(
                f"split {split!r} is not in the records; available splits: {sorted(self.splits)}"
            )
        return self.splits[split]

    def num_records(self, split: str) -> int:
        return self.splits[split].num_records if split in self.splits else 0

    @property
    def num_branches(self) -> int:
        return next(iter(self.nodes.values())).num_branches

    @property
    def branch_names(self) -> tuple[str, ...]:
        """The branches' names (a bare storage manifest without names: their indices as text)."""
        return self.branches or tuple(str(index) for index in range(self.num_branches))

    @property
    def codes(self) -> bool:
        """The records hold autoencoder codes of pooled features (jpeg-ladder-compress), not
        activations."""
        return "compressed_from" in self.config

    @property
    def weights_seed(self) -> int:
        """The seed of the offline stage's random weights (weights kind none)."""
        return int(self.config.get("seed", 0))

    def source_root(self) -> str | None:
        """The folder image ids are relative to, when the offline stage recorded it."""
        if self.config.get("data_dir"):
            return self.config["data_dir"]
        if self.config.get("labels_csv"):
            return fileio.dirname(self.config["labels_csv"])
        return None

    def shard_paths(self, node: str, split: str) -> list[str]:
        """Paths of one node's shards of one split, in shard order (the manifest must have been
        read)."""
        self.node(node)
        paths = []
        for shard in sorted(self.split(split).shards, key=lambda shard: shard.index):
            if node not in shard.files:
                raise errors.RecordsError(
                    f"shard {shard.index} of split {split!r} has no file for node {node!r}: "
                    "the manifest is incomplete, rerun make_tfrecords to finish the job"
                )
            paths.append(fileio.join(self.directory, shard.files[node].path))
        return paths

    # Converting --------------------------------------------------------------------------------

    def to_json(self) -> dict:
        """The JSON object written to manifest.json (optional statistics left out when unknown)."""
        return {
            "format_version": version_for(self.nodes),
            "compression": self.compression,
            "backbone": self.backbone,
            "weights": self.weights,
            "input_size": self.input_size,
            "input_range": None if self.input_range is None else list(self.input_range),
            "central_crop": self.central_crop,
            "qualities": list(self.qualities),
            **({"codecs": self.codecs} if self.codecs else {}),
            "branches": list(self.branches),
            "class_names": list(self.class_names),
            "num_quarantined": self.num_quarantined,
            "config": self.config,
            **({"views": self.views} if self.views else {}),
            "nodes": {
                name: _drop_none(
                    {
                        "shape": list(info.shape),
                        "dtype": info.dtype,
                        "encoding": info.encoding,
                        "zero_fraction": info.zero_fraction,
                        "bytes_per_image": info.bytes_per_image,
                        "float32_bytes_per_image": info.float32_bytes_per_image,
                    }
                )
                for name, info in self.nodes.items()
            },
            "splits": {
                name: {
                    "num_records": info.num_records,
                    "num_shards": info.num_shards,
                    "shards": [
                        {
                            "index": shard.index,
                            "num_records": shard.num_records,
                            "files": {
                                node: dataclasses.asdict(file) for node, file in shard.files.items()
                            },
                        }
                        for shard in info.shards
                    ],
                }
                for name, info in self.splits.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        nodes = {
            name: NodeInfo(
                shape=tuple(int(size) for size in info["shape"]),
                encoding=info["encoding"],
                dtype=info.get("dtype", "float32"),
                zero_fraction=info.get("zero_fraction"),
                bytes_per_image=info.get("bytes_per_image"),
                float32_bytes_per_image=info.get("float32_bytes_per_image"),
            )
            for name, info in data["nodes"].items()
        }
        splits = {
            name: SplitInfo(
                num_records=int(info["num_records"]),
                shards=tuple(
                    ShardInfo(
                        index=int(shard["index"]),
                        num_records=int(shard["num_records"]),
                        files={node: FileInfo(**file) for node, file in shard["files"].items()},
                    )
                    for shard in info["shards"]
                ),
            )
            for name, info in data["splits"].items()
        }
        return cls(
            nodes=nodes,
            splits=splits,
            compression=data.get("compression") or "",
            format_version=data.get("format_version", FORMAT_VERSION),
            backbone=data.get("backbone"),
            weights=data.get("weights"),
            input_size=data.get("input_size"),
            input_range=tuple(data["input_range"]) if data.get("input_range") else None,
            central_crop=data.get("central_crop", 1.0),
            qualities=tuple(data.get("qualities", ())),
            codecs=data.get("codecs"),
            branches=tuple(data.get("branches", ())),
            class_names=tuple(data.get("class_names", ())),
            num_quarantined=int(data.get("num_quarantined", 0)),
            config=dict(data.get("config") or {}),
            views=data.get("views"),
        )

    # Files -------------------------------------------------------------------------------------

    def write(self, records_dir: str) -> None:
        fileio.write_json_atomic(fileio.join(records_dir, MANIFEST_NAME), self.to_json())

    @classmethod
    def read(cls, records_dir: str) -> "Manifest":
        path = fileio.join(records_dir, MANIFEST_NAME)
        text = fileio.read_text(path)
        if text is None:
            raise errors.RecordsError(
                f"no {MANIFEST_NAME} in {records_dir}: run make_tfrecords first, or point to "
                f"the --out-dir it wrote"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise errors.RecordsError(
                f"{path} is not valid JSON ({error}): rerun make_tfrecords to rewrite it"
            ) from None
        if data.get("format_version") not in READABLE_VERSIONS:
            raise errors.RecordsError(
                f"{path} has format_version {data.get('format_version')!r}, this reader reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}: rerun make_tfrecords with this version "
                f"of the code"
            )
        try:
            return dataclasses.replace(cls.from_json(data), directory=records_dir)
        except (KeyError, TypeError) as error:
            raise errors.RecordsError(
                f"{path} lacks a field the format requires ({error}): rerun make_tfrecords"
            ) from None


def version_for(nodes: dict[str, NodeInfo]) -> int:
    """The oldest format version whose readers read every node."""
    if any(info.dtype != "float32" for info in nodes.values()):
        return REDUCED_DTYPE_VERSION
    return FORMAT_VERSION


def _drop_none(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if value is not None}
