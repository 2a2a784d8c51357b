"""Summaries of weighted draws (importance sampling): self-normalised
weighted mean and sd, weighted quantiles (the inverse of the weighted
empirical CDF), the delta-method MCSE of the self-normalised mean (Owen 2013,
Monte Carlo theory, ch. 9) and Kish's effective sample size. Reached through
``ppl.inference.diagnostics.summary(draws, log_weights=...)``."""

import jax
import jax.numpy as jnp
import numpy as np

from ppl.inference.summary_table import Summary, _columns, _flagged

__all__ = ["weighted_summary", "WEIGHTED_COLUMNS"]

WEIGHTED_COLUMNS = ("mean", "sd", "5%", "50%", "95%", "mcse_mean", "ess")
MIN_KISH_ESS = 100


@jax.jit
def _weighted_statistics(x, log_weights):
    weights = jax.nn.softmax(log_weights.astype(jnp.promote_types(log_weights.dtype, x.dtype))).astype(x.dtype)
    mean = weights @ x
    squared = (x - mean) ** 2
    order = jnp.argsort(x, axis=0)
    cumulative = jnp.cumsum(weights[order], axis=0)
    ordered = jnp.take_along_axis(x, order, axis=0)
    last = x.shape[0] - 1
    quantile = lambda level: jnp.take_along_axis(ordered, jnp.minimum(jnp.sum(cumulative < level, axis=0), last)[None], 0)[0]
    ess = 1.0 / jnp.sum(weights**2)
    values = [mean, jnp.sqrt(weights @ squared), quantile(0.05), quantile(0.5), quantile(0.95)]
    values += [jnp.sqrt(weights**2 @ squared), jnp.broadcast_to(ess, mean.shape)]
    return dict(zip(WEIGHTED_COLUMNS, values)), jnp.isfinite(x).all(axis=0), ess


def weighted_summary(leaves, log_weights):
    """The ``Summary`` of weighted draws: ``leaves`` a ``{row name: (particles,
    *shape)}`` dict, ``log_weights`` ``(particles,)`` unnormalised (see
    ``diagnostics.summary``, which calls it).

    >>> s = weighted_summary({"mu": jnp.array([0.0, 1.0, 2.0, 3.0])}, jnp.zeros(4))
    >>> float(s.table["mean"][0]), float(s.table["ess"][0])
    (1.5, 4.0)
    """
    if log_weights.ndim != 1:
        raise ValueError(f"summary: log_weights must have shape (particles,), got {log_weights.shape}")
    num_particles = log_weights.shape[0]
    joined, names = _columns(leaves, (num_particles,))
    columns, finite, ess = _weighted_statistics(joined, log_weights)
    table = {column: np.asarray(columns[column]) for column in WEIGHTED_COLUMNS}
    ess = float(ess)
    warnings = _flagged(names, ~np.asarray(finite), "draws that are NaN or infinite")
    if not ess >= MIN_KISH_ESS:
        warnings.append(f"Kish effective sample size {ess:.1f} of {num_particles} weighted draws is below {MIN_KISH_ESS}")
    return Summary(names, table, warnings, None, f"{num_particles} weighted draws, Kish ESS {ess:.1f}")
