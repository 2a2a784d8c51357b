"""Importance sampling: likelihood weighting or a custom proposal."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

import ppl
from ppl.jit import jit_gfi

__all__ = ["importance", "ImportanceResult"]


class ImportanceResult(NamedTuple):
    """Weighted particles. ``traces`` is a vectorised trace (a leading particle
    axis on every choice; arguments shared); ``log_weights`` are unnormalised."""

    traces: Any
    log_weights: jax.Array

    @property
    def log_marginal_likelihood(self):
        """log (1/N sum_i w_i): an unbiased estimate of p(observations) in log space."""
        return logsumexp(self.log_weights) - jnp.log(self.log_weights.shape[0])

    @property
    def normalized_weights(self):
        return jax.nn.softmax(self.log_weights)

    @property
    def ess(self):
        """Effective sample size (sum w)^2 / sum w^2."""
        return jnp.exp(2 * logsumexp(self.log_weights) - logsumexp(2 * self.log_weights))

    def estimate(self, fn):
        """Self-normalised estimate of E[fn(choices)] under the posterior.

        >>> result.estimate(lambda c: c["coeffs"])  # doctest: +SKIP
        """
        values = jax.vmap(fn)(self.traces.choices)
        weights = self.normalized_weights.reshape((-1,) + (1,) * (jnp.ndim(values) - 1))
        return jnp.sum(weights * values, axis=0)

    def resample(self, key, n):
        """Sampling importance resampling: ``n`` traces drawn in proportion to the weights."""
        index = jax.random.categorical(key, self.log_weights, shape=(n,))
        return self.traces[index]


def importance(key, model, args, observations, num_particles, proposal=None, proposal_args=(), chunk_size=65536):
    """Importance sampling of ``model`` given ``observations``.

    Without ``proposal``, latent choices are drawn from the model (likelihood
    weighting). A ``proposal`` is a generative function over the latent
    addresses, run on ``proposal_args``; weights are then
    ``log p(latents, observations) - log q(latents)``. Particles are computed
    ``chunk_size`` at a time, so a million fit in memory.

    >>> import jax, jax.numpy as jnp, ppl
    >>> from ppl import dist
    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     return ppl.sample("y", dist.Normal(mu, 1.0))
    >>> result = ppl.inference.importance(jax.random.key(0), model, (), {"y": 1.0}, 10_000)
    >>> bool(abs(result.estimate(lambda c: c["mu"]) - 0.5) < 0.05)
    True
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive Python int, got {num_particles!r}")
    ppl.errors.check_finite_arguments(args)
    return _importance(model, key, observations, tuple(args), num_particles, proposal, tuple(proposal_args), chunk_size)


@jit_gfi(constraints_arg=1)
def _importance(model, key, observations, args, num_particles, proposal, proposal_args, chunk_size):
    def particle(k):
        if proposal is None:
            trace, log_weight = model.generate(k, observations, args)
        else:
            proposal_key, model_key = jax.random.split(k)
            proposed = proposal.simulate(proposal_key, proposal_args)
            constraints = ppl.merge(proposed.choices, observations)
            trace, log_weight = model.generate(model_key, constraints, args)
            log_weight = log_weight - proposed.log_density
        return trace.choices, trace.retval, trace.log_density, log_weight

    keys = jax.random.split(key, num_particles)
    if num_particles <= chunk_size:
        choices, retval, log_density, log_weights = jax.vmap(particle)(keys)
    else:
        choices, retval, log_density, log_weights = jax.lax.map(particle, keys, batch_size=chunk_size)
    return ImportanceResult(ppl.Trace(choices, retval, args, log_density), log_weights)
