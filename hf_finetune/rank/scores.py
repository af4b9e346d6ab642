"""Transferability scores of frozen features: LogME, k-NN and linear-probe accuracy, H-score.

Each score reads features of the training split (n x D, float) and integer labels 0..C-1; k-NN and
the linear probe are also scored on the validation split. Larger is better for every score.

    logme          You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer
                   Learning", ICML 2021: the log marginal likelihood (evidence) of a Bayesian linear
                   regression from the features to each one-hot label column, maximised over its two
                   hyper-parameters, per sample, averaged over classes.
    knn            accuracy (and macro-F1) of a k-nearest-neighbour vote on validation, by cosine
                   similarity after subtracting the training mean (SimpleShot's CL2N, Wang et al. 2019:
                   uncentred features share a large common direction that swamps the cosine)
    probe          accuracy (and macro-F1) of a logistic regression on standardised features
    hscore         Bao et al., "An information-theoretic approach to transferability", ICIP 2019:
                   tr(cov(f)^-1 cov(E[f|y])), with a Ledoit-Wolf shrinkage covariance (as Ibrahim et
                   al., "Newer is not always better", 2022, recommend, since cov(f) is singular when
                   there are fewer samples than dimensions)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A guard against dividing by an exactly zero fit residual or weight norm (features that interpolate
# the labels perfectly); far below any value the updates reach on real data.
_TINY = 1e-12


@dataclass
class LogMEFit:
    """LogME of one feature matrix, with the hyper-parameters found for each class."""

    score: float  # mean over classes of the maximised log evidence per sample
    evidence: np.ndarray  # (C,) log evidence per sample of each class's regression
    alpha: np.ndarray  # (C,) precision of the weight prior
    beta: np.ndarray  # (C,) precision of the observation noise
    iterations: np.ndarray  # (C,) fixed-point iterations until alpha/beta settled


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6) -> LogMEFit:
    """LogME (You et al., ICML 2021) of `features` (n x D) for integer `labels` (n,) in 0..C-1.

    One SVD of the features serves every class; each class then runs the fixed-point updates of
    alpha and beta on the label column's coordinates in the singular basis, so the cost per class
    and iteration is O(min(n, D)).

    Args:
        features: the frozen backbone's features of the training split.
        labels: class ids.
        max_iter: most fixed-point iterations per class (they usually settle in under 10).
        tol: stop when lambda = alpha / beta changes by less than this, relatively.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or len(f) != len(y):
        raise ValueError(f"features must be (n, D) with one row per label; got {f.shape} and {y.shape}")
    n, dim = f.shape
    classes = np.unique(y)
    targets = (y[:, None] == classes[None, :]).astype(np.float64)  # (n, C): y_c = 1 where the label is c

    # Paper Sec. 4.2: the model is y_c = F w + noise, prior w ~ N(0, alpha^-1 I), noise ~ N(0, beta^-1).
    # With F = U S V^T (thin SVD, k = rank) and sigma_i = s_i^2 the eigenvalues of F^T F, everything
    # below depends on y_c only through z = U^T y_c, plus the part of y_c outside the span of U.
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * max(n, dim) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], s[keep] ** 2  # (n, k), (k,)
    z = u.T @ targets  # (k, C)
    z2 = z**2
    outside = np.maximum((targets**2).sum(axis=0) - z2.sum(axis=0), 0.0)  # ||y_c - U U^T y_c||^2

    alpha = np.ones(len(classes))
    beta = np.ones(len(classes))
    iterations = np.zeros(len(classes), dtype=int)
    active = np.ones(len(classes), dtype=bool)
    for step in range(1, max_iter + 1):
        a, b = alpha[active], beta[active]
        lam = a / b
        m2, res2 = _posterior_norms(sigma, z2[:, active], outside[active], lam)
        # Effective number of well-determined parameters: gamma = sum_i beta sigma_i / (alpha + beta sigma_i).
        gamma = (sigma[:, None] / (sigma[:, None] + lam[None, :])).sum(axis=0)
        # MacKay's fixed-point updates (paper Algorithm 1): alpha <- gamma / m^T m,
        # beta <- (n - gamma) / ||F m - y||^2.
        new_a = gamma / np.maximum(m2, _TINY)
        new_b = (n - gamma) / np.maximum(res2, _TINY)
        alpha[active], beta[active] = new_a, new_b
        iterations[active] = step
        settled = np.abs(new_a / new_b - lam) <= tol * lam
        active[np.flatnonzero(active)[settled]] = False
        if not active.any():
            break

    m2, res2 = _posterior_norms(sigma, z2, outside, alpha / beta)
    evidence = log_evidence(n, dim, sigma, alpha, beta, m2, res2) / n
    return LogMEFit(float(evidence.mean()), evidence, alpha, beta, iterations)


def _posterior_norms(sigma: np.ndarray, z2: np.ndarray, outside: np.ndarray,
                     lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """m^T m and ||F m - y||^2 at lambda = alpha / beta, for each column.

    The posterior mean m = beta A^-1 F^T y with A = alpha I + beta F^T F is, in the singular basis,
    m_i = s_i z_i / (lambda + sigma_i); so m^T m = sum sigma_i z_i^2 / (lambda + sigma_i)^2, and the
    residual F m - y has coordinates -lambda z_i / (lambda + sigma_i) in the span of U, plus the
    part of y outside it.
    """
    shrink = sigma[:, None] + lam[None, :]
    m2 = (sigma[:, None] * z2 / shrink**2).sum(axis=0)
    res2 = ((lam[None, :] / shrink) ** 2 * z2).sum(axis=0) + outside
    return m2, res2


def log_evidence(n: int, dim: int, sigma: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                 m2: np.ndarray, res2: np.ndarray) -> np.ndarray:
    """log p(y | F, alpha, beta), the closed form of the evidence integral (paper Sec. 4.2):

        n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log |A|

    with log |A| = sum_i log(alpha + beta sigma_i) over all D eigenvalues of F^T F; the D - k zero
    ones each add log(alpha).
    """
    log_det = np.log(alpha[None, :] + beta[None, :] * sigma[:, None]).sum(axis=0) + (dim - len(sigma)) * np.log(alpha)
    return (n / 2 * np.log(beta) + dim / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)


@dataclass
class Accuracy:
    accuracy: float
    f1: float  # macro-F1
    truth: np.ndarray  # the validation labels and the predictions, for the bootstrap (rank/confidence.py)
    predicted: np.ndarray


def _scored(truth: np.ndarray, predicted: np.ndarray) -> Accuracy:
    from sklearn.metrics import accuracy_score, f1_score

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return Accuracy(float(accuracy_score(truth, predicted)),
                    float(f1_score(truth, predicted, average="macro", zero_division=0)), truth, predicted)


def knn_accuracy(train: np.ndarray, train_labels: np.ndarray, validation: np.ndarray,
                 validation_labels: np.ndarray, k: int = 5) -> Accuracy:
    """Validation accuracy of a k-nearest-neighbour vote, cosine similarity of training-mean-centred features."""
    from sklearn.neighbors import KNeighborsClassifier

    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="euclidean")
    knn.fit(_unit_rows(train - mean), train_labels)
    return _scored(validation_labels, knn.predict(_unit_rows(np.asarray(validation, dtype=np.float64) - mean)))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; between unit vectors, Euclidean distance orders as cosine similarity does.

    Done here rather than by scikit-learn's cosine metric, which takes norms below about 1e-15 for zero
    and leaves those rows unscaled: a randomly initialised deep network's features can be 1e-21 small.
    """
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def probe_accuracy(train: np.ndarray, train_labels: np.ndarray, validation: np.ndarray,
                   validation_labels: np.ndarray, c: float = 1.0, seed: int = 0) -> Accuracy:
    """Validation accuracy of a logistic-regression probe trained on standardised training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    probe.fit(np.asarray(train, dtype=np.float64), train_labels)
    return _scored(validation_labels, probe.predict(np.asarray(validation, dtype=np.float64)))


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score tr(cov(f)^-1 cov(E[f|y])) with a Ledoit-Wolf shrinkage estimate of cov(f).

    cov(E[f|y]) is the covariance of each sample's class-mean feature (the between-class scatter).
    """
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(axis=0)
    y = np.asarray(labels)
    class_means = np.zeros_like(f)
    for c in np.unique(y):
        class_means[y == c] = f[y == c].mean(axis=0)
    covariance = LedoitWolf(assume_centered=True).fit(f).covariance_
    between = class_means.T @ class_means / len(f)
    return float(np.trace(np.linalg.solve(covariance, between)))
