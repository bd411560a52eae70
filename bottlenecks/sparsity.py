"""Sparsity statistics of activations: how many values are exactly zero."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class ZeroCounter:
    """Running count of zeros over every activation seen at one node."""

    zeros: int = 0
    total: int = 0

    def update(self, activations: np.ndarray) -> None:
        self.zeros += int(activations.size - np.count_nonzero(activations))
        self.total += int(activations.size)

    def merge(self, other: "ZeroCounter") -> None:
        self.zeros += other.zeros
        self.total += other.total

    @property
    def fraction(self) -> float:
        return self.zeros / self.total if self.total else 0.0
