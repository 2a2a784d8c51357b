"""The Metropolis-adjusted Langevin algorithm (Roberts and Tweedie 1996):
a Langevin step ``x' = x + (eps^2 / 2) M^{-1} grad log p(x) + eps sqrt(M^{-1}) z``
corrected by Metropolis-Hastings with the proposal's densities both ways.
The metric is a diagonal inverse mass matrix (a vector; ones for none).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.inference.mcmc.hmc import init
from ppl.inference.mcmc.kernel import Kernel

__all__ = ["MALAInfo", "mala_step", "mala_kernel"]


class MALAInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array  # the proposal's log density is not finite


def _log_proposal(to, frm, step_size, inverse_mass_matrix):
    """log q(to | frm) up to a constant that cancels in the ratio."""
    mean = frm.position + 0.5 * step_size**2 * inverse_mass_matrix * frm.log_density_grad
    return -0.5 * jnp.sum((to.position - mean) ** 2 / inverse_mass_matrix) / step_size**2


def mala_step(key, state, log_density_fn, step_size, inverse_mass_matrix):
    """One MALA transition from ``state`` (an ``HMCState``).

    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> state, info = mala_step(jax.random.key(0), init(jnp.zeros(2), log_density_fn), log_density_fn, 0.5, jnp.ones(2))
    >>> state.position.shape
    (2,)
    """
    noise_key, accept_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, state.position.shape, state.position.dtype)
    drift = 0.5 * step_size**2 * inverse_mass_matrix * state.log_density_grad
    proposal = init(state.position + drift + step_size * jnp.sqrt(inverse_mass_matrix) * noise, log_density_fn)
    log_ratio = (
        proposal.log_density
        - state.log_density
        + _log_proposal(state, proposal, step_size, inverse_mass_matrix)
        - _log_proposal(proposal, state, step_size, inverse_mass_matrix)
    )
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    acceptance_rate = jnp.exp(jnp.minimum(0.0, log_ratio))
    accepted = jax.random.uniform(accept_key, (), acceptance_rate.dtype) < acceptance_rate
    new_state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposal, state)
    return new_state, MALAInfo(acceptance_rate, accepted, ~jnp.isfinite(proposal.log_density))


def mala_kernel(log_density_fn, step_size, inverse_mass_matrix=None):
    """MALA with a fixed step size as a ``Kernel`` on positions.

    >>> kernel = mala_kernel(lambda x: -0.5 * jnp.sum(x**2), 0.5)
    >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros(2)))
    """

    def step(key, state):
        metric = jnp.ones_like(state.position) if inverse_mass_matrix is None else inverse_mass_matrix
        return mala_step(key, state, log_density_fn, step_size, metric)

    return Kernel(lambda position: init(position, log_density_fn), step)
