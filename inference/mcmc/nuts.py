"""The No-U-Turn sampler (Hoffman and Gelman 2014) in Stan's form
(Betancourt 2017, "A conceptual introduction to HMC", appendix A):
multinomial sampling of the new state from the trajectory (biased towards
the last doubling), the generalised U-turn criterion checked on every
subtree, a divergence when the energy error passes a threshold, and a
maximum tree depth. The trajectory is built in ``nuts_tree.py``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.inference.mcmc.hmc import init
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.metrics import sample_momentum
from ppl.inference.mcmc.nuts_tree import build_trajectory

__all__ = ["NUTSInfo", "nuts_step", "nuts_kernel"]


class NUTSInfo(NamedTuple):
    acceptance_rate: jax.Array  # mean Metropolis acceptance over the trajectory's new states (Stan's)
    is_divergent: jax.Array
    energy: jax.Array  # the Hamiltonian of the new state
    num_integration_steps: jax.Array  # leapfrog steps (gradient evaluations) of this transition
    tree_depth: jax.Array  # doublings made, a discarded last one included


def nuts_step(key, state, log_density_fn, step_size, inverse_mass_matrix, max_tree_depth=10):
    """One NUTS transition from ``state`` (an ``HMCState`` on a vector position).

    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> state = init(jnp.zeros(2), log_density_fn)
    >>> state, info = nuts_step(jax.random.key(0), state, log_density_fn, 0.5, jnp.ones(2))
    >>> state.position.shape, int(info.tree_depth) <= 10
    ((2,), True)
    """
    momentum_key, tree_key = jax.random.split(key)
    momentum = sample_momentum(momentum_key, inverse_mass_matrix, state.position)
    trajectory = build_trajectory(tree_key, state, momentum, log_density_fn, step_size, inverse_mass_matrix, max_tree_depth)
    info = NUTSInfo(
        trajectory.sum_acceptance / jnp.maximum(trajectory.num_steps, 1),
        trajectory.is_divergent,
        trajectory.energy,
        trajectory.num_steps,
        trajectory.depth,
    )
    return trajectory.sample, info


def nuts_kernel(log_density_fn, step_size, inverse_mass_matrix, max_tree_depth=10):
    """NUTS with fixed parameters as a ``Kernel`` on positions.

    >>> kernel = nuts_kernel(lambda x: -0.5 * jnp.sum(x**2), 0.5, jnp.ones(2))
    >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros(2)))
    """
    step = lambda key, state: nuts_step(key, state, log_density_fn, step_size, inverse_mass_matrix, max_tree_depth)
    return Kernel(lambda position: init(position, log_density_fn), step)
