"""The No-U-Turn sampler (Hoffman and Gelman 2014) in Stan's form
(Betancourt 2017, "A conceptual introduction to HMC", appendix A):
multinomial sampling of the new state from the trajectory (biased towards
the last doubling), the generalised U-turn criterion checked on every
subtree, a divergence when the energy error passes a threshold, and a
maximum tree depth.

The trajectory is built by NumPyro's tested ``build_tree``: iterative
doubling in a ``while_loop`` that keeps O(max_tree_depth) momenta for the
U-turn checks (bounded memory, no recursion). It works on the potential
energy, the negative log density; this module converts at the boundary.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import IntegratorState, build_tree, euclidean_kinetic_energy, velocity_verlet

from ppl.inference.mcmc.hmc import DIVERGENCE_THRESHOLD, HMCState, init
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.metrics import sample_momentum

__all__ = ["NUTSInfo", "nuts_step", "nuts_kernel"]


class NUTSInfo(NamedTuple):
    acceptance_rate: jax.Array  # mean Metropolis acceptance over the trajectory's states (Stan's)
    is_divergent: jax.Array
    energy: jax.Array  # the Hamiltonian of the new state
    num_integration_steps: jax.Array  # leapfrog steps (gradient evaluations) of this transition
    tree_depth: jax.Array


def nuts_step(key, state, log_density_fn, step_size, inverse_mass_matrix, max_tree_depth=10):
    """One NUTS transition from ``state`` (an ``HMCState``).

    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> state = init(jnp.zeros(2), log_density_fn)
    >>> state, info = nuts_step(jax.random.key(0), state, log_density_fn, 0.5, jnp.ones(2))
    >>> state.position.shape, int(info.tree_depth) <= 10
    ((2,), True)
    """
    momentum_key, tree_key = jax.random.split(key)
    momentum = sample_momentum(momentum_key, inverse_mass_matrix, state.position)
    potential_fn = lambda position: -log_density_fn(position)
    _, update = velocity_verlet(potential_fn, euclidean_kinetic_energy)
    start = IntegratorState(state.position, momentum, -state.log_density, -state.log_density_grad)
    tree = build_tree(
        update,
        euclidean_kinetic_energy,
        start,
        inverse_mass_matrix,
        jnp.asarray(step_size, jnp.result_type(state.position)),
        tree_key,
        max_delta_energy=DIVERGENCE_THRESHOLD,
        max_tree_depth=max_tree_depth,
    )
    new_state = HMCState(tree.z_proposal, -tree.z_proposal_pe, -tree.z_proposal_grad)
    info = NUTSInfo(
        tree.sum_accept_probs / jnp.maximum(tree.num_proposals, 1),
        tree.diverging,
        tree.z_proposal_energy,
        tree.num_proposals,
        tree.depth,
    )
    return new_state, info


def nuts_kernel(log_density_fn, step_size, inverse_mass_matrix, max_tree_depth=10):
    """NUTS with fixed parameters as a ``Kernel`` on positions.

    >>> kernel = nuts_kernel(lambda x: -0.5 * jnp.sum(x**2), 0.5, jnp.ones(2))
    >>> state, info = kernel.step(jax.random.key(0), kernel.init(jnp.zeros(2)))
    """
    step = lambda key, state: nuts_step(key, state, log_density_fn, step_size, inverse_mass_matrix, max_tree_depth)
    return Kernel(lambda position: init(position, log_density_fn), step)
