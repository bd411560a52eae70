"""The lower layers' entry points that tools and benchmarks use, so that they import only from pipeline."""

from bottlenecks import cut
from bottlenecks import registry
from tfrecords import example
from tfrecords import fileio
from tfrecords import manifest as manifest_lib
from tfrecords import reader

POOL = registry.POOL
get_backbone = registry.get_backbone
build_backbone = registry.build
check_nodes = registry.check_nodes
node_extractor = cut.extractor
read_manifest = manifest_lib.Manifest.read
make_dataset = reader.make_dataset
loaded_allocator = reader.loaded_allocator
parse_batch = example.parse_batch
read_json = fileio.read_json
write_json_atomic = fileio.write_json_atomic
