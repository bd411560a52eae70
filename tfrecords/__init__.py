"""The bottleneck storage format: Example spec, codec, shard planning, writer, manifest and
reader."""
