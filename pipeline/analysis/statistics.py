"""Paired statistics of two classifiers on the same images: exact McNemar (sign) test and bootstrap
interval."""

import numpy as np
import scipy.stats

# Resampled means are computed this many resamples at a time, so memory stays at CHUNK x images
# whatever the number of resamples (10,000 x 50,000 images at once would take 4 GB of indices).
CHUNK = 200


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin (1.0 without
    any)."""
    discordant = wins + losses
    return float(scipy.stats.binomtest(wins, discordant, 0.5).pvalue) if discordant else 1.0


def paired_sign_test(differences: np.ndarray) -> dict:
    """Per image, the mean over seeds of (arm right - baseline right); images where it is positive
    are wins.

    differences: [seeds, images] in {-1, 0, 1}. With one seed this is exactly McNemar's test; with
    several, each image still counts once (seeds of the same images are not independent samples).
    """
    per_image = (
        np.asarray(differences, np.float64).reshape(-1, np.shape(differences)[-1]).mean(axis=0)
    )
    wins, losses = int(np.sum(per_image > 0)), int(np.sum(per_image < 0))
    return {"wins": wins, "losses": losses, "p_value": mcnemar_exact(wins, losses)}


def bootstrap_interval(
    differences: np.ndarray, resamples: int = 10000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile interval of the mean difference, resampling images (the same draw for every seed).

    differences: [images] or [seeds, images]; the statistic is the mean over seeds and images.
    """
    differences = np.asarray(differences, np.float64)
    per_image = differences.reshape(-1, differences.shape[-1]).mean(
        axis=0
    )  # mean over seeds first: exact
    count = per_image.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        stop = min(resamples, start + CHUNK)
        means[start:stop] = per_image[rng.integers(0, count, size=(stop - start, count))].mean(
            axis=1
        )
    return _percentiles(means, level)


def bootstrap_interval_seeds(
    arm_right: np.ndarray,
    baseline_right: np.ndarray,
    resamples: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float]:
    """Percentile interval of mean(arm) - mean(baseline), resampling images and each arm's seeds.

    arm_right, baseline_right: [seeds, images] in {0, 1} (the same images in the same order; the
    seed counts may differ). Each resample draws images (one draw for both arms, since they are
    paired by image) and, independently per arm, seeds with replacement: runs of the same arm differ
    by their seed, and an interval over images alone would take one lucky or unlucky seed for a
    property of the arm. With one seed per arm this is the paired image bootstrap.
    """
    arm_right = np.asarray(arm_right, np.float64).reshape(-1, np.shape(arm_right)[-1])
    baseline_right = np.asarray(baseline_right, np.float64).reshape(
        -1, np.shape(baseline_right)[-1]
    )
    count = arm_right.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        size = min(resamples, start + CHUNK) - start
        # Per resample, each seed's weight = how often it was drawn / seeds; then per-image
        # differences.
        per_image = (
            _seed_weights(rng, size, len(arm_right)) @ arm_right
            - _seed_weights(rng, size, len(baseline_right)) @ baseline_right
        )
        images = rng.integers(0, count, size=(size, count))
        means[start : start + size] = np.take_along_axis(per_image, images, axis=1).mean(axis=1)
    return _percentiles(means, level)


def _seed_weights(rng: np.random.Generator, resamples: int, seeds: int) -> np.ndarray:
    drawn = rng.integers(0, seeds, size=(resamples, seeds))
    return np.stack([np.bincount(row, minlength=seeds) for row in drawn]) / seeds


def _percentiles(means: np.ndarray, level: float) -> list[float]:
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]
