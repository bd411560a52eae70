"""The trainer: the shared-tail topology, the block-by-block stage loop, TensorBoard logs and
export."""
