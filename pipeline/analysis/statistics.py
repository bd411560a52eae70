"""Paired statistics of two classifiers on the same images: exact McNemar (sign) test and bootstrap interval."""

import numpy as np
import scipy.stats

# Resampled means are computed this many resamples at a time, so memory stays at CHUNK x images
# whatever the number of resamples (10,000 x 50,000 images at once would take 4 GB of indices).
CHUNK = 200


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin (1.0 without any)."""
    discordant = wins + losses
    return float(scipy.stats.binomtest(wins, discordant, 0.5).pvalue) if discordant else 1.0


def paired_sign_test(differences: np.ndarray) -> dict:
    """Per image, the mean over seeds of (arm right - baseline right); images where it is positive are wins.

    differences: [seeds, images] in {-1, 0, 1}. With one seed this is exactly McNemar's test; with
    several, each image still counts once (seeds of the same images are not independent samples).
    """
    per_image = np.asarray(differences, np.float64).reshape(-1, np.shape(differences)[-1]).mean(axis=0)
    wins, losses = int(np.sum(per_image > 0)), int(np.sum(per_image < 0))
    return {"wins": wins, "losses": losses, "p_value": mcnemar_exact(wins, losses)}


def bootstrap_interval(differences: np.ndarray, resamples: int = 10000, seed: int = 0,
                       level: float = 0.95) -> list[float]:
    """Percentile interval of the mean difference, resampling images (the same draw for every seed).

    differences: [images] or [seeds, images]; the statistic is the mean over seeds and images.
    """
    differences = np.asarray(differences, np.float64)
    per_image = differences.reshape(-1, differences.shape[-1]).mean(axis=0)  # mean over seeds first: exact
    count = per_image.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        stop = min(resamples, start + CHUNK)
        means[start:stop] = per_image[rng.integers(0, count, size=(stop - start, count))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]
