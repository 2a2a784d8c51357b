"""Uniformity tests of rank statistics: simultaneous confidence bands for
their ECDF (Säilynoja, Bürkner and Vehtari 2022, "Graphical test for
discrete uniformity and its applications in goodness-of-fit evaluation and
multiple sample comparison", Statistics and Computing 32:32) and the
chi-square test of their histogram.

A rank statistic takes the values 0..L (L = the number of posterior draws it
counts) and is uniform on them when the posterior draws are right. Its ECDF is
read at thresholds c_1 < ... < c_K in 1..L: F_k = (1/N) #{ranks < c_k}, whose
value under uniformity is p_k = c_k / (L + 1) and whose count N F_k is then
Binomial(N, p_k). The band is simultaneous: by simulation of uniform ranks,
the pointwise level gamma is lowered until the band formed by the Binomial
quantiles gamma/2 and 1 - gamma/2 at every threshold holds all K points of a
uniform sample's ECDF with probability 1 - alpha (the paper's simulation
method). The same simulated statistics give a p-value: the paper's
statistic is the smallest two-sided Binomial tail probability over the
thresholds, and a sample is as extreme as that fraction of uniform samples.

The null statistics are simulated with a fixed seed, so a band is a function
of (N, L, alpha, points) alone and two calls agree; nothing is cached.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import bdtr, chdtrc

__all__ = ["EcdfBand", "ecdf_band", "ecdf_counts", "ecdf_p_values", "in_band", "chi_square_p_values"]

NUM_TRIALS = 4000  # uniform samples simulated per band: the p-value's resolution is 1 / 4001
MAX_POINTS = 100  # thresholds the ECDF is read at, at most
_NULL_SEED = 20220302  # fixed: a band depends on its sizes alone


class EcdfBand(NamedTuple):
    """A simultaneous band for the ECDF of ``num_ranks`` ranks in 0..``num_draws``.

    ``thresholds`` (K,): the c_k; ``probabilities`` (K,): c_k / (L + 1), the
    ECDF under uniformity; ``lower``, ``upper`` (K,): the band, as ECDF values;
    ``gamma``: the pointwise level that makes it simultaneous at ``1 - alpha``;
    ``null_statistics`` (NUM_TRIALS,): the smallest tail probabilities of
    uniform samples, sorted (for p-values).
    """

    num_ranks: int
    num_draws: int
    alpha: float
    thresholds: np.ndarray
    probabilities: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    gamma: float
    null_statistics: np.ndarray


def ecdf_band(num_ranks, num_draws, alpha=0.05, num_points=None):
    """The simultaneous ``1 - alpha`` band for the ECDF of ``num_ranks``
    ranks uniform on 0..``num_draws``, read at ``num_points`` thresholds
    (default: every rank value up to ``MAX_POINTS``).

    >>> band = ecdf_band(100, 19)
    >>> band.thresholds[:3], band.probabilities[0]
    (array([1, 2, 3]), np.float64(0.05))
    >>> bool(band.lower[9] < 0.5 < band.upper[9]), bool(band.gamma < 0.05)  # simultaneous: each point wider
    (True, True)
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha!r}: need a number in (0, 1)")
    thresholds = _thresholds(num_draws, num_points)
    probabilities = thresholds / (num_draws + 1.0)
    uniform = np.random.default_rng(_NULL_SEED).integers(0, num_draws + 1, (NUM_TRIALS, num_ranks))
    null = np.sort(_smallest_tail(_counts_below(uniform, thresholds), num_ranks, probabilities))
    gamma = float(np.quantile(null, alpha, method="lower"))
    lower = _binomial_quantile(gamma / 2, num_ranks, probabilities) / num_ranks
    upper = _binomial_quantile(1.0 - gamma / 2, num_ranks, probabilities) / num_ranks
    return EcdfBand(int(num_ranks), int(num_draws), float(alpha), thresholds, probabilities, lower, upper, gamma, null)


def ecdf_counts(ranks, band):
    """``(K, columns)``: how many ranks of each column of ``ranks`` (N, columns) lie below each threshold."""
    return _counts_below(np.asarray(ranks).T, band.thresholds).T


def in_band(ranks, band):
    """Per column of ``ranks`` (N, columns): does its ECDF lie inside the band at every threshold?"""
    ecdf = ecdf_counts(ranks, band) / band.num_ranks
    return np.all((ecdf >= band.lower[:, None]) & (ecdf <= band.upper[:, None]), axis=0)


def ecdf_p_values(ranks, band):
    """Per column of ``ranks`` (N, columns): the fraction of uniform samples whose
    smallest Binomial tail probability is at most this column's (Säilynoja et al.'s
    statistic), with the +1 of a Monte Carlo p-value so that it is never 0.

    >>> band = ecdf_band(200, 9)
    >>> ranks = np.random.default_rng(1).integers(0, 10, (200, 2))
    >>> ranks[:, 1] = np.minimum(ranks[:, 1], 7)  # never above 7: too small
    >>> p = ecdf_p_values(ranks, band)
    >>> bool(p[0] > 0.05), bool(p[1] < 0.001)
    (True, True)
    """
    statistics = _smallest_tail(ecdf_counts(ranks, band).T, band.num_ranks, band.probabilities)
    as_extreme = np.searchsorted(band.null_statistics, statistics, side="right")
    return (1.0 + as_extreme) / (band.null_statistics.size + 1.0)


def chi_square_p_values(ranks, num_draws, num_bins=None):
    """Per column of ``ranks`` (N, columns) in 0..``num_draws``: the p-value of
    Pearson's chi-square test of uniformity on ``num_bins`` bins of (nearly)
    equal width (default: at most 20, and at least 5 expected ranks per bin),
    each bin's expected count exact for its width.

    >>> ranks = np.tile(np.arange(10), 20)[:, None]  # perfectly flat
    >>> float(chi_square_p_values(ranks, 9)[0])
    1.0
    """
    ranks = np.asarray(ranks)
    size = ranks.shape[0]
    num_bins = num_bins or max(2, min(20, num_draws + 1, size // 5))
    edges = np.unique(np.round(np.linspace(0, num_draws + 1, num_bins + 1)).astype(int))
    expected = size * np.diff(edges) / (num_draws + 1.0)
    observed = np.stack([np.histogram(column, bins=edges)[0] for column in ranks.T], axis=1)
    statistic = np.sum((observed - expected[:, None]) ** 2 / expected[:, None], axis=0)
    return chdtrc(len(expected) - 1, statistic)


def _thresholds(num_draws, num_points):
    num_points = min(num_draws, num_points or MAX_POINTS)
    return np.unique(np.round(np.arange(1, num_points + 1) * (num_draws + 1.0) / (num_points + 1)).astype(int))


def _counts_below(ranks, thresholds):
    """``(rows, K)``: per row of ``ranks`` (rows, N), how many are below each threshold
    (one histogram of all rows at once, summed up to each threshold)."""
    ranks = np.asarray(ranks, np.int64)
    rows, width = ranks.shape[0], int(max(ranks.max(initial=0), thresholds[-1])) + 1
    histogram = np.bincount((ranks + width * np.arange(rows)[:, None]).ravel(), minlength=rows * width)
    below = np.cumsum(histogram.reshape(rows, width), axis=1)
    return below[:, np.asarray(thresholds) - 1]


def _smallest_tail(counts, num_ranks, probabilities):
    """Per row of ``counts`` (rows, K): min over k of 2 min(P(X <= count), P(X >= count)), X ~ Binomial(N, p_k)."""
    cdf = _binomial_cdf(num_ranks, probabilities)  # a table: N + 1 evaluations per threshold, not one per count
    columns = np.arange(len(probabilities))
    below = cdf[counts, columns]
    at_least = np.where(counts > 0, 1.0 - cdf[np.maximum(counts - 1, 0), columns], 1.0)
    return np.min(np.minimum(1.0, 2.0 * np.minimum(below, at_least)), axis=-1)


def _binomial_cdf(n, probabilities):
    """``(n + 1, K)``: P(X <= x) for x = 0..n, X ~ Binomial(n, p_k)."""
    return bdtr(np.arange(n + 1)[:, None], n, np.asarray(probabilities)[None, :])


def _binomial_quantile(q, n, probabilities):
    """The smallest count x with P(X <= x) >= q, X ~ Binomial(n, p), per p."""
    return np.argmax(_binomial_cdf(n, probabilities) >= q - 1e-12, axis=0).astype(float)
