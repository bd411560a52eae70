"""Convex decision layers solved exactly: L2-regularised multinomial logistic regression by L-BFGS.

A linear layer on frozen pooled features is a convex problem, so it is solved rather than searched
for with SGD and a stopping rule, as transfer-learning studies do (Kornblith, Shlens and Le 2019;
the linear probes of SimCLR and CLIP):

    minimise  J(W, b) = mean_i CE(softmax(x_i W + b), y_i)  +  l2 / 2 ||W||^2

(the bias unpenalised) over a path of L2 strengths, strongest first, each solution starting the
next; the caller scores every point of the path on validation and keeps the best.

The solver is scipy.optimize's L-BFGS-B on float64 NumPy gradients. For l2 > 0 the problem is smooth
and strongly convex, which a quasi-Newton method solves to a tiny gradient in a few hundred
iterations of one matrix product each way; float64 keeps that optimum exact to the tolerance, where
float32 gradients stall near 1e-4; and NumPy's BLAS needs no graph for a problem of this size.

With fewer rows than features (concat of 11 branches: 14,080 features for about a thousand images)
the optimum's W lies in the span of the rows (the gradient of the data term is X^T G, and the L2
term's is W itself), so the problem is solved in an orthonormal basis of that span and mapped back:
the same optimum, each iteration about features / rows times cheaper (Basis).

A class without a training row has no finite optimum (its bias would fall forever): it is left out
of the solve and gets a zero kernel column and ABSENT_BIAS, a probability of zero in float32.
"""

import dataclasses

import numpy as np
import scipy.optimize

# The path's L2 strengths relative to the mean squared norm of a row (scaling the features by a
# leaves the path's solutions the same up to 1/a): twelve, strongest first, log-spaced from 1e-2 to
# 1e-9. On MobileNetV2's pool features of real photos (a mean squared norm near 900) the validation
# loss of a linear layer still falls at 1e-7 and the test loss is lowest near 3e-8.
RELATIVE_STRENGTHS = tuple(float(value) for value in np.logspace(-2, -9, 12))
# Points of the path after the best whose validation score is worse before the path stops: the
# validation loss along an L2 path falls to one minimum and rises after it.
PATH_PATIENCE = 2
# L-BFGS stops when the largest gradient component is below GRADIENT_TOLERANCE or an iteration
# lowers the objective by less than OBJECTIVE_TOLERANCE of it.
GRADIENT_TOLERANCE = 1e-7
OBJECTIVE_TOLERANCE = 1e-13
MAX_ITERATIONS = 5000
HISTORY = 20  # L-BFGS's memory: pairs of (step, gradient change) it keeps
ABSENT_BIAS = -1e4
# Rows of the basis whose singular value is below this share of the largest carry no data.
RANK_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class Layer:
    """A decision layer: logits = features @ kernel + bias."""

    kernel: np.ndarray  # [D, K] float64
    bias: np.ndarray  # [K] float64

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.kernel + self.bias


@dataclasses.dataclass(frozen=True)
class Fit:
    """One point of a path: the solution at one L2 strength, as the problem's flat parameters (in
    its basis's coordinates: small even for wide features), and how its solve went."""

    parameters: np.ndarray
    l2: float
    objective: float
    iterations: int
    converged: bool


class Basis:
    """Coordinates in which a problem is cheap to solve: an orthonormal basis V [D, r] of the rows'
    span when there are fewer rows than features, else the features themselves (V = None)."""

    def __init__(self, vectors: np.ndarray | None):
        self.vectors = vectors

    @classmethod
    def of(cls, rows: np.ndarray) -> "Basis":
        """A basis spanning `rows` [N, D] (every row any later fit will train on)."""
        count, width = np.shape(rows)
        if count >= width:
            return cls(None)
        rows = np.asarray(rows, np.float64)
        gram = rows @ rows.T
        values, vectors = np.linalg.eigh(gram)
        keep = values > RANK_TOLERANCE * max(values.max(initial=0.0), 1e-300)
        # rows = U S V^T, so V = rows^T U S^-1 on the kept singular values (S^2 = eigenvalues).
        return cls((rows.T @ vectors[:, keep]) / np.sqrt(values[keep]))

    def project(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float64)
        return features if self.vectors is None else features @ self.vectors

    def kernel(self, coordinates: np.ndarray) -> np.ndarray:
        """A kernel in the basis's coordinates [r, K] -> in the features' [D, K]."""
        return coordinates if self.vectors is None else self.vectors @ coordinates


class Problem:
    """Training rows (features [N, D], labels [N]) for one layer of num_classes outputs, held in a
    basis's coordinates."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        basis: Basis | None = None,
    ):
        self.basis = basis or Basis(None)
        self.width = int(np.shape(features)[1])
        self.num_classes = num_classes
        labels = np.asarray(labels, np.int64)
        self.present = np.flatnonzero(np.bincount(labels, minlength=num_classes))
        position = np.full(num_classes, -1)
        position[self.present] = np.arange(len(self.present))
        self.rows = self.basis.project(features)
        self.targets = position[labels]
        self.weights = np.full(len(labels), 1.0 / max(1, len(labels)))
        # The mean squared norm of a row: the scale of the L2 strengths (RELATIVE_STRENGTHS).
        self.energy = float(self.weights @ np.einsum("ij,ij->i", self.rows, self.rows))

    @property
    def shape(self) -> tuple[int, int]:
        """(coordinates, classes solved for)."""
        return self.rows.shape[1], len(self.present)

    def objective(self, parameters: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
        """J and its gradient at the flat parameters (the kernel's coordinates, then the bias)."""
        width, classes = self.shape
        kernel = parameters[: width * classes].reshape(width, classes)
        bias = parameters[width * classes :]
        logits = self.rows @ kernel + bias
        logits -= logits.max(axis=1, keepdims=True)
        exponentials = np.exp(logits)
        totals = exponentials.sum(axis=1)
        rows = np.arange(len(self.targets))
        data = float(self.weights @ (np.log(totals) - logits[rows, self.targets]))
        residual = exponentials / totals[:, None]
        residual[rows, self.targets] -= 1.0
        residual *= self.weights[:, None]
        gradient_kernel = self.rows.T @ residual + l2 * kernel
        value = data + 0.5 * l2 * float(np.sum(kernel * kernel))
        return value, np.concatenate([gradient_kernel.ravel(), residual.sum(axis=0)])

    def layer(self, parameters: np.ndarray, projected: bool = False) -> Layer:
        """The layer over every class (absent ones at ABSENT_BIAS), for features in their own
        coordinates, or with `projected` for features put through basis.project (cheaper)."""
        width, classes = self.shape
        coordinates = parameters[: width * classes].reshape(width, classes)
        kernel = np.zeros((width if projected else self.width, self.num_classes))
        kernel[:, self.present] = coordinates if projected else self.basis.kernel(coordinates)
        bias = np.full(self.num_classes, ABSENT_BIAS)
        bias[self.present] = parameters[width * classes :]
        return Layer(kernel, bias)

    def parameters(self, layer: Layer | None) -> np.ndarray:
        """A layer (e.g. a warm start) as this problem's flat parameters; None: all zeros."""
        width, classes = self.shape
        if layer is None:
            return np.zeros(width * classes + classes)
        kernel = layer.kernel[:, self.present]
        if self.basis.vectors is not None:
            kernel = self.basis.vectors.T @ kernel
        return np.concatenate([kernel.ravel(), layer.bias[self.present]])


def fit(problem: Problem, l2: float, start: np.ndarray | None = None) -> Fit:
    """The solution minimising J at this L2 strength, from `start` (a warm start: parameters of
    this problem, e.g. another fit's) or zeros."""
    if l2 <= 0:
        raise ValueError(f"the L2 strength must be positive, got {l2}")
    result = scipy.optimize.minimize(
        problem.objective,
        problem.parameters(None) if start is None else start,
        args=(l2,),
        jac=True,
        method="L-BFGS-B",
        options={
            "maxiter": MAX_ITERATIONS,
            "maxcor": HISTORY,
            "gtol": GRADIENT_TOLERANCE,
            "ftol": OBJECTIVE_TOLERANCE,
        },
    )
    return Fit(result.x, l2, float(result.fun), int(result.nit), bool(result.success))


def strengths(problem: Problem, relative=RELATIVE_STRENGTHS) -> tuple[float, ...]:
    """The path's L2 strengths for this problem, strongest first."""
    scale = problem.energy if problem.energy > 0 else 1.0
    return tuple(sorted((value * scale for value in relative), reverse=True))


@dataclasses.dataclass(frozen=True)
class Path:
    """A path of fits, strongest L2 first, with each one's validation score (lower is better)."""

    fits: tuple[Fit, ...]
    scores: tuple[float, ...]

    @property
    def best(self) -> Fit:
        """The fit of the lowest score; a tie goes to the stronger L2 (the earlier fit)."""
        return self.fits[int(np.argmin(self.scores))]

    def to_json(self) -> list[dict]:
        return [
            {
                "l2": fitted.l2,
                "validation_loss": score,
                "iterations": fitted.iterations,
                "converged": fitted.converged,
            }
            for fitted, score in zip(self.fits, self.scores)
        ]


def path(problem: Problem, score, l2_values=None, solve=None) -> Path:
    """Fits along the L2 strengths (default: strengths(problem)), each warm-starting the next,
    scoring each with score(layer), the layer given for projected features (Problem.layer);
    stops PATH_PATIENCE points after the best score. solve(problem, l2, start) replaces fit (a
    cache of fits, say)."""
    solve = solve or fit
    fits, scores, start = [], [], None
    for l2 in l2_values or strengths(problem):
        fitted = solve(problem, l2, start)
        fits.append(fitted)
        scores.append(float(score(problem.layer(fitted.parameters, projected=True))))
        start = fitted.parameters
        if len(scores) - 1 - int(np.argmin(scores)) >= PATH_PATIENCE:
            break
    return Path(tuple(fits), tuple(scores))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of predicted probabilities [N, K] (floored at 1e-12, as the models' own
    log of a mixture is)."""
    picked = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
