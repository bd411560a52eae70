"""Backbones: registry, cutting a model at its nodes, activations and their sparsity. No file
I/O."""
