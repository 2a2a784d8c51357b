"""The leapfrog (velocity Verlet) integrator of Hamiltonian dynamics.

The state carries the log density and its gradient at the position, so one
step costs one gradient evaluation (Neal, "MCMC using Hamiltonian dynamics",
2011, eq. 5.18-5.20).
"""

from typing import NamedTuple

import jax

from ppl.inference.mcmc.metrics import velocity

__all__ = ["IntegratorState", "leapfrog", "integrate"]


class IntegratorState(NamedTuple):
    position: jax.Array
    momentum: jax.Array
    log_density: jax.Array
    log_density_grad: jax.Array


def leapfrog(log_density_fn, step_size, inverse_mass_matrix, state):
    """One leapfrog step: half momentum step, full position step, half momentum step.

    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> x = jnp.array([1.0])
    >>> state = IntegratorState(x, jnp.array([0.0]), log_density_fn(x), -x)
    >>> leapfrog(log_density_fn, 0.1, jnp.ones(1), state).position
    Array([0.995], dtype=float32)
    """
    momentum = state.momentum + 0.5 * step_size * state.log_density_grad
    position = state.position + step_size * velocity(inverse_mass_matrix, momentum)
    log_density, log_density_grad = jax.value_and_grad(log_density_fn)(position)
    momentum = momentum + 0.5 * step_size * log_density_grad
    return IntegratorState(position, momentum, log_density, log_density_grad)


def integrate(log_density_fn, step_size, inverse_mass_matrix, state, num_steps):
    """``num_steps`` leapfrog steps in a ``lax.fori_loop``.

    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> x = jnp.array([1.0])
    >>> state = IntegratorState(x, jnp.array([0.0]), log_density_fn(x), -x)
    >>> end = integrate(log_density_fn, 0.01, jnp.ones(1), state, 314)  # half a period
    >>> bool(jnp.allclose(end.position, -1.0, atol=1e-3))
    True
    """
    step = lambda _, s: leapfrog(log_density_fn, step_size, inverse_mass_matrix, s)
    return jax.lax.fori_loop(0, num_steps, step, state)
