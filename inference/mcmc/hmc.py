"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps (Duane et
al. 1987; Neal 2011), on a log density over R^n.

``init`` is one ``jax.value_and_grad``; ``hmc_step`` is the transition with
its parameters as arguments (so warmup can change them every step);
``hmc_kernel`` closes over fixed parameters and gives a ``Kernel``. NUTS and
MALA reuse ``HMCState``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.inference.mcmc.integrators import IntegratorState, integrate
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.metrics import kinetic_energy, sample_momentum

__all__ = ["HMCState", "HMCInfo", "init", "hmc_step", "hmc_kernel", "DIVERGENCE_THRESHOLD"]

# An energy error above this is a divergence (Stan's and NumPyro's threshold).
DIVERGENCE_THRESHOLD = 1000.0


class HMCState(NamedTuple):
    """A position with its log density and gradient, so a step reuses them."""

    position: jax.Array
    log_density: jax.Array
    log_density_grad: jax.Array


class HMCInfo(NamedTuple):
    acceptance_rate: jax.Array  # min(1, exp(-energy error))
    is_accepted: jax.Array
    is_divergent: jax.Array  # energy error above DIVERGENCE_THRESHOLD, or not finite
    energy: jax.Array  # the Hamiltonian (negative log density + kinetic energy) of the new state
    num_integration_steps: jax.Array


def init(position, log_density_fn):
    """The ``HMCState`` at ``position``.

    >>> state = init(jnp.array([1.0, 2.0]), lambda x: -0.5 * jnp.sum(x**2))
    >>> state.log_density, state.log_density_grad
    (Array(-2.5, dtype=float32), Array([-1., -2.], dtype=float32))
    """
    position = jnp.asarray(position)
    log_density, log_density_grad = jax.value_and_grad(log_density_fn)(position)
    return HMCState(position, log_density, log_density_grad)


def energies(state, inverse_mass_matrix, start_momentum, end):
    """The Hamiltonian at the start of a trajectory and at ``end``, and its
    change, NaN mapped to +inf (a NaN is a divergence, never an acceptance)."""
    start_energy = -state.log_density + kinetic_energy(inverse_mass_matrix, start_momentum)
    end_energy = -end.log_density + kinetic_energy(inverse_mass_matrix, end.momentum)
    delta = end_energy - start_energy
    return start_energy, end_energy, jnp.where(jnp.isnan(delta), jnp.inf, delta)


def hmc_step(key, state, log_density_fn, step_size, inverse_mass_matrix, num_integration_steps):
    """One HMC transition from ``state``: fresh momentum ``N(0, M)``,
    ``num_integration_steps`` leapfrog steps, Metropolis accept/reject.

    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> state = init(jnp.zeros(2), log_density_fn)
    >>> state, info = hmc_step(jax.random.key(0), state, log_density_fn, 0.1, jnp.ones(2), 10)
    >>> state.position.shape, bool(info.is_divergent)
    ((2,), False)
    """
    momentum_key, accept_key = jax.random.split(key)
    momentum = sample_momentum(momentum_key, inverse_mass_matrix, state.position)
    start = IntegratorState(state.position, momentum, state.log_density, state.log_density_grad)
    end = integrate(log_density_fn, step_size, inverse_mass_matrix, start, num_integration_steps)
    start_energy, end_energy, delta = energies(state, inverse_mass_matrix, momentum, end)
    acceptance_rate = jnp.exp(jnp.minimum(0.0, -delta))
    accepted = jax.random.uniform(accept_key, (), acceptance_rate.dtype) < acceptance_rate
    proposal = HMCState(end.position, end.log_density, end.log_density_grad)
    new_state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposal, state)
    info = HMCInfo(
        acceptance_rate,
        accepted,
        delta > DIVERGENCE_THRESHOLD,
        jnp.where(accepted, end_energy, start_energy),
        jnp.asarray(num_integration_steps),
    )
    return new_state, info


def hmc_kernel(log_density_fn, step_size, inverse_mass_matrix, num_integration_steps):
    """HMC with fixed parameters as a ``Kernel`` on positions.

    >>> kernel = hmc_kernel(lambda x: -0.5 * jnp.sum(x**2), 0.1, jnp.ones(2), 10)
    >>> state = kernel.init(jnp.zeros(2))
    >>> state, info = kernel.step(jax.random.key(0), state)
    """
    step = lambda key, state: hmc_step(key, state, log_density_fn, step_size, inverse_mass_matrix, num_integration_steps)
    return Kernel(lambda position: init(position, log_density_fn), step)
