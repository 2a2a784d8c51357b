"""Convergence diagnostics of Markov chains, in JAX: rank-normalised split
R-hat, bulk and tail effective sample sizes, Monte Carlo standard errors
(Vehtari, Gelman, Simpson, Carpenter and Bürkner 2021, "Rank-normalization,
folding, and localization: an improved R-hat", Bayesian Analysis 16(2)).

Every function takes draws with leading axes ``(chains, draws, *event)`` and
returns an ``event``-shaped array, one value per scalar; all are jittable.
They follow ArviZ's conventions exactly (``arviz.rhat(x, method="rank")``,
``arviz.ess(x, method="bulk" | "tail" | "mean")``, ``arviz.mcse(x,
method="mean" | "sd")``), edge cases included: a scalar with a NaN draw, or
fewer than 4 draws, gets NaN; R-hat needs at least 2 chains (NaN with one);
a constant scalar has an ESS of ``chains * draws`` (of the split chains) and
an R-hat of NaN. Autocovariances are computed by FFT, and the sum of
autocorrelations is truncated by Geyer's initial monotone sequence.
``summary`` puts them in a table, with the sampler's warnings; for
weighted draws (importance sampling) it hands over to ``weighted_summary``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from ppl.inference.summary_table import Summary, _columns, _count, _flagged, _named_leaves, _sampler_warnings
from ppl.inference.weighted_summary import weighted_summary

__all__ = ["rhat", "ess_bulk", "ess_tail", "ess_mean", "mcse_mean", "mcse_sd", "summary", "Summary"]

MIN_DRAWS = 4  # as ArviZ: fewer draws per chain give NaN
CONSTANT_RANGE = 1e-15  # np.finfo(float).resolution: ArviZ's test for a constant array, whatever the dtype


def rhat(x):
    """Rank-normalised split R-hat: the larger of the split R-hats of the
    rank-normalised draws (bulk) and of the rank-normalised distances to the
    median (tail). Values above 1.01 signal chains that have not mixed.
    Equal to ``arviz.rhat(x, method="rank")``; NaN with fewer than 2 chains.

    >>> x = jax.random.normal(jax.random.key(0), (4, 1000))
    >>> bool(abs(rhat(x) - 1.0) < 0.01)
    True
    >>> bool(rhat(x.at[0].add(1.0)) > 1.1)  # one chain elsewhere
    True
    """
    return _per_scalar(_rhat_rank, x, "rhat", min_chains=2)


def ess_bulk(x):
    """Bulk effective sample size: the ESS of the rank-normalised split
    chains (for the mean and median, robust to heavy tails). Equal to
    ``arviz.ess(x, method="bulk")``.

    >>> x = jax.random.normal(jax.random.key(0), (4, 1000))
    >>> bool(3000 < ess_bulk(x) < 5000)  # independent draws: about 4000
    True
    """
    return _per_scalar(_ess_bulk, x, "ess_bulk")


def ess_tail(x):
    """Tail effective sample size: the smaller of the ESS of the indicators
    ``x <= q`` for the 5% and 95% quantiles ``q`` (for the 5% and 95%
    quantiles of the draws). Equal to ``arviz.ess(x, method="tail")``.

    >>> x = jax.random.normal(jax.random.key(0), (4, 1000))
    >>> bool(2500 < ess_tail(x) < 5500)
    True
    """
    return _per_scalar(_ess_tail, x, "ess_tail")


def ess_mean(x):
    """Effective sample size of the mean (the split chains, not ranked).
    Equal to ``arviz.ess(x, method="mean")``.

    >>> x = jnp.cumsum(jax.random.normal(jax.random.key(0), (2, 1000)), axis=1)  # random walks
    >>> bool(ess_mean(x) < 100)
    True
    """
    return _per_scalar(_ess_mean, x, "ess_mean")


def mcse_mean(x):
    """Monte Carlo standard error of the mean: the standard deviation of all
    draws (ddof 1) over the square root of ``ess_mean``. Equal to
    ``arviz.mcse(x, method="mean")``.

    >>> x = jax.random.normal(jax.random.key(0), (4, 2500))
    >>> bool(abs(mcse_mean(x) - 0.01) < 0.002)  # 1 / sqrt(10000)
    True
    """
    return _per_scalar(_mcse_mean, x, "mcse_mean")


def mcse_sd(x):
    """Monte Carlo standard error of the standard deviation (the delta method
    on the variance, with the ESS of the squared deviations). Equal to
    ``arviz.mcse(x, method="sd")``.

    >>> x = jax.random.normal(jax.random.key(0), (4, 2500))
    >>> bool(abs(mcse_sd(x) - 0.0071) < 0.002)  # sd 1: about 1 / sqrt(2 * 10000)
    True
    """
    return _per_scalar(_mcse_sd, x, "mcse_sd")


# ----- one scalar: (chains, draws) --------------------------------------------


def _per_scalar(fn, x, who, min_chains=1):
    """``fn`` of each scalar's ``(chains, draws)`` array, vmapped over the
    flattened event; NaN where ArviZ gives NaN (a NaN draw, too few chains or draws)."""
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{who}: expected draws with leading axes (chains, draws, *event), got shape {x.shape}; "
            "for a single chain of draws pass x[None]"
        )
    dtype = jnp.promote_types(x.dtype, jnp.result_type(float))
    chains, draws, *event = x.shape
    if chains < min_chains or draws < MIN_DRAWS:
        return jnp.full(event, jnp.nan, dtype)
    return _columnwise(fn, x.reshape(chains, draws, -1).astype(dtype)).reshape(event)


@functools.partial(jax.jit, static_argnums=0)
def _columnwise(fn, columns):
    """``fn`` of each column ``columns[:, :, i]`` (NaN for a column with a NaN
    draw), compiled once per function and shape (of floating ``columns``)."""
    has_nan = jnp.isnan(columns).any(axis=(0, 1))
    return jax.tree.map(lambda v: jnp.where(has_nan, jnp.nan, v.astype(columns.dtype)), jax.vmap(fn, in_axes=2)(columns))


def _split(x):
    """Each chain cut into its first and last halves (the middle draw of an
    odd number is left out): (chains, draws) -> (2 chains, draws // 2)."""
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half :]])


def _z_scale(x):
    """Rank normalisation: average ranks over all chains (ties share their
    mean rank), Blom's offset (r - 3/8) / (S + 1/4), then the normal quantile."""
    flat = x.reshape(-1)
    ordered = jnp.sort(flat)
    below = jnp.searchsorted(ordered, flat, side="left")
    up_to = jnp.searchsorted(ordered, flat, side="right")
    rank = (below + up_to + 1).astype(x.dtype) / 2  # ranks below+1 .. up_to, averaged
    return ndtri((rank - 0.375) / (flat.size + 0.25)).reshape(x.shape)


def _rhat_split(x):
    """R-hat of (already split) chains: sqrt((B / W + n - 1) / n), B = n times
    the variance of the chain means, W the mean of the chain variances."""
    n, x = x.shape[1], x - x[0, 0]  # shifted: exactly 0 / 0 = NaN for a constant, as ArviZ (means need not round back)
    between = n * jnp.var(jnp.mean(x, axis=1), ddof=1)
    within = jnp.mean(jnp.var(x, axis=1, ddof=1))
    return jnp.sqrt((between / within + n - 1) / n)


def _rhat_rank(x):
    return _rhat_and_z_scale(_split(x))[0]


def _rhat_and_z_scale(split):
    """Rank R-hat, and the rank-normalised split chains (for the bulk ESS).
    The bulk (ranks of the draws) and tail (ranks of the distances to the
    median) parts are stacked and vmapped: one copy of the code to compile."""
    z = jax.vmap(_z_scale)(jnp.stack([split, jnp.abs(split - jnp.median(split))]))
    bulk, tail = jax.vmap(_rhat_split)(z)
    return jnp.where(tail > bulk, tail, bulk), z[0]  # Python's max(bulk, tail), NaN bulk included


def _autocovariance(x):
    """Biased autocovariance of each chain at every lag, by FFT (zero padding
    to at least twice the length, so no lag wraps around)."""
    n = x.shape[1]
    size = 1 << (2 * n - 1).bit_length()
    centred = x - jnp.mean(x, axis=1, keepdims=True)
    spectrum = jnp.fft.rfft(centred, n=size, axis=1)
    return jnp.fft.irfft(spectrum * jnp.conj(spectrum), n=size, axis=1)[:, :n] / n


def _ess(x):
    """ESS of (already split) chains: chains * draws / tau, with tau = -1 + 2
    sum of autocorrelations (combined over chains as in Stan), the sum cut
    by Geyer's initial positive sequence of pair sums rho_2j + rho_2j+1 and
    made monotone (each pair sum at most the one before), as ArviZ's ``_ess``."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.result_type(float)))
    chains, n = x.shape
    acov = jnp.mean(_autocovariance(x), axis=0)
    mean_var = acov[0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if chains > 1:
        var_plus = var_plus + jnp.var(jnp.mean(x, axis=1), ddof=1)
    rho = (1.0 - (mean_var - acov) / var_plus).at[0].set(1.0)
    # ArviZ's loop: step j = 1, 2, ... (lags 2j, 2j+1) runs while 2j - 1 < n - 3
    # and every pair sum before it was positive; m steps run.
    steps = max(0, (n - 3) // 2)
    pairs = rho[0 : 2 * steps + 1 : 2] + rho[1 : 2 * steps + 2 : 2]  # pair sums 0..steps
    m = jnp.argmin(jnp.concatenate([pairs[:steps] > 0, jnp.zeros(1, bool)]))  # leading positive pair sums
    last_even = rho[2 * m]  # the last step's even lag: counted once if kept (pair sum >= 0) or positive
    last = jnp.where((pairs[m] >= 0) | (last_even > 0), last_even, 0.0)
    # Pair sums 0..m-1, each lowered to the least before it (a scan compiles faster than lax.cummin on CPU).
    monotone = jax.lax.scan(lambda lowest, pair: (jnp.minimum(lowest, pair),) * 2, pairs[0], pairs)[1]
    tau = -1.0 + 2.0 * jnp.sum(jnp.where(jnp.arange(steps + 1) < m, monotone, 0.0)) + last
    size = chains * n
    tau = jnp.maximum(tau, 1.0 / jnp.log10(jnp.asarray(size, x.dtype)))
    ess = jnp.where(jnp.isnan(rho[1]), jnp.nan, size / tau)
    return jnp.where(jnp.max(x) - jnp.min(x) < CONSTANT_RANGE, jnp.asarray(size, x.dtype), ess)


def _indicator_at_quantile(x, probability):
    """``x <= q`` for q the type-7 quantile of all draws (``scipy.stats.mstats.
    mquantiles(alphap=1, betap=1)``, as ArviZ). q lies between two neighbouring
    order statistics, so ``x <= q`` is ``x <= `` the lower one unless q is the
    upper one: no interpolation, hence no rounding at the boundary."""
    ordered = jnp.sort(x.reshape(-1))
    size = ordered.size
    position = size * probability + (1.0 - probability)  # index math in Python floats, as NumPy's
    k = int(min(max(position, 1), size - 1))
    gamma = min(max(position - k, 0.0), 1.0)
    return x <= (ordered[k] if gamma >= 1.0 else ordered[k - 1])


def _ess_bulk(x):
    return _ess(_z_scale(_split(x)))


def _ess_mean(x):
    return _ess(_split(x))


def _ess_tail(x):
    return _tail(*_stacked_ess([_split(_indicator_at_quantile(x, p)) for p in (0.05, 0.95)]))


def _tail(low, high):
    return jnp.where(high < low, high, low)  # Python's min(low, high)


def _stacked_ess(arrays):
    """The ESS of each of several same-shaped arrays: vmapped, compiled once."""
    return jax.vmap(_ess)(jnp.stack([a.astype(jnp.promote_types(a.dtype, jnp.result_type(float))) for a in arrays]))


def _sd(x):
    shifted = x - x[0, 0]  # the same sd; exactly 0 for a constant, as ArviZ's (a mean need not round back)
    return jnp.std(shifted, ddof=1)


def _mcse_mean(x):
    return _sd(x) / jnp.sqrt(_ess(_split(x)))


def _mcse_sd(x):
    shifted = x - x[0, 0]
    squared = (shifted - jnp.mean(shifted)) ** 2
    variance = jnp.mean(squared)
    variance_of_variance = (jnp.mean(squared**2) - variance**2) / _ess(_split(squared))
    return jnp.sqrt(variance_of_variance / variance / 4)


# ----- summaries ------------------------------------------------------------

CHAIN_COLUMNS = ("mean", "sd", "5%", "50%", "95%", "mcse_mean", "ess_bulk", "ess_tail", "r_hat")
RHAT_THRESHOLD, ESS_PER_CHAIN = 1.01, 100


def summary(draws, *, log_weights=None, stats=None, max_tree_depth=None):
    """A ``Summary`` table of ``draws``, one row per scalar, with warnings.

    ``draws``: a choice map (nested dict of arrays; nested addresses are
    joined with ``/`` in the row names, as ``ys/y[3]``) or a single array
    (named ``x``).

    MCMC (no ``log_weights``): leaves are ``(chains, draws, *shape)``; the
    columns are mean, sd (ddof 1), the 5%, 50% and 95% quantiles (type 7,
    over all chains), ``mcse_mean``, ``ess_bulk``, ``ess_tail`` and
    ``r_hat`` (NaN with one chain, as ArviZ). ``stats``: the sampler's
    ``(chains, draws)`` arrays under ArviZ's sample_stats names;
    ``"diverging"`` (bool) gives ``num_divergences`` and a warning, and
    ``"tree_depth"`` with ``max_tree_depth`` a warning when the depth
    reached it. Warnings also name the scalars with R-hat above 1.01,
    with bulk or tail ESS below 100 per chain, or with non-finite draws.

    Weighted draws (importance sampling): ``log_weights`` of shape
    ``(particles,)`` (unnormalised) and leaves ``(particles, *shape)``. The
    columns are the self-normalised weighted mean and sd (sqrt of sum w (x
    - mean)^2, no bias correction), the weighted quantiles (the inverse of
    the weighted empirical CDF: the least draw whose cumulative normalised
    weight reaches the level), ``mcse_mean`` by the delta method for the
    self-normalised estimator (Owen 2013, Monte Carlo theory, ch. 9: sqrt of
    sum w^2 (x - mean)^2; sd / sqrt(N) for equal weights), and ``ess``,
    Kish's 1 / sum w^2 (the same for every row). No R-hat. A warning when
    the ESS is below 100. ``summary`` runs outside ``jax.jit`` (it returns
    a Python object); its statistics are one compiled function per shape.

    >>> draws = {"mu": jax.random.normal(jax.random.key(0), (4, 500)),
    ...          "theta": jax.random.normal(jax.random.key(1), (4, 500, 2))}
    >>> s = summary(draws, stats={"diverging": jnp.zeros((4, 500), bool).at[0, 7].set(True)})
    >>> s.names, s.num_divergences
    (['mu', 'theta[0]', 'theta[1]'], 1)
    >>> print(s)  # doctest: +NORMALIZE_WHITESPACE
    4 chains x 500 draws, 1 divergent transition
               mean     sd      5%  ...  r_hat
    mu       ...
    warning: 1 divergent transition (0.05% of 2000 draws)
    """
    leaves = _named_leaves(draws)
    if log_weights is None:
        return _chain_summary(leaves, stats or {}, max_tree_depth)
    if stats is not None or max_tree_depth is not None:
        raise TypeError("summary: stats and max_tree_depth describe MCMC draws, not weighted ones (log_weights)")
    return weighted_summary(leaves, jnp.asarray(log_weights))


def _chain_statistics(x):
    """Every column of one scalar's ``(chains, draws)``, sharing the split
    chains, their ranks and one stacked ESS computation."""
    split = _split(x)
    r_hat, z = _rhat_and_z_scale(split)
    indicators = [_split(_indicator_at_quantile(x, p)) for p in (0.05, 0.95)]
    bulk, low, high, mean = _stacked_ess([z, *indicators, split])
    quantiles = jnp.quantile(x, jnp.asarray([0.05, 0.5, 0.95], x.dtype))
    values = [jnp.mean(x), _sd(x), *quantiles, _sd(x) / jnp.sqrt(mean), bulk, _tail(low, high), r_hat]
    return dict(zip(CHAIN_COLUMNS, values))


def _chain_summary(leaves, stats, max_tree_depth):
    first = next(iter(leaves.values()))
    if first.ndim < 2:
        raise ValueError(f"summary: MCMC draws have leading axes (chains, draws), got shape {first.shape}")
    chains, draws = first.shape[:2]
    num_divergences, warnings = _sampler_warnings(stats, (chains, draws), max_tree_depth)
    joined, names = _columns(leaves, (chains, draws))
    if draws < MIN_DRAWS:
        table = {column: np.full(len(names), np.nan) for column in CHAIN_COLUMNS}
    else:
        values = _columnwise(_chain_statistics, joined)
        table = {column: np.array(values[column]) for column in CHAIN_COLUMNS}  # in order (jit sorts dict keys)
    if chains < 2:
        table["r_hat"][:] = np.nan  # as ArviZ: R-hat needs two chains
    warnings += _flagged(names, ~np.isfinite(np.asarray(joined)).all(axis=(0, 1)), "draws that are NaN or infinite")
    warnings += _flagged(names, table["r_hat"] > RHAT_THRESHOLD, f"r_hat above {RHAT_THRESHOLD}")
    for column in ("ess_bulk", "ess_tail"):
        below = f"{column} below {ESS_PER_CHAIN} per chain ({ESS_PER_CHAIN * chains} for {_count(chains, 'chain')})"
        warnings += _flagged(names, table[column] < ESS_PER_CHAIN * chains, below)
    header = f"{_count(chains, 'chain')} x {draws} draws"
    if num_divergences is not None:
        header += f", {_count(num_divergences, 'divergent transition')}"
    return Summary(names, table, warnings, num_divergences, header)
