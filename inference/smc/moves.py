"""MCMC moves for SMC samplers on positions, tuned from the particles.

A move is ``move(key, positions, log_density_fn, parameters, num_steps) ->
(positions, acceptance rates)`` for all particles at once (a vmap of a kernel of
``ppl.inference.mcmc``). ``tune(positions, parameters, acceptance)`` sets the
next step's parameters from the particle cloud: the inverse mass matrix (or
random-walk scale) from the particles' variances, the step size nudged
towards a target acceptance rate (the particle analogue of Stan's warmup;
Buchholz, Chopin and Jacob 2021 tune HMC moves in SMC from the particles).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.inference.mcmc.hmc import hmc_step, init
from ppl.inference.mcmc.mala import mala_step

__all__ = ["MoveParameters", "MOVES", "move_function", "tune", "initial_parameters"]

TARGET_ACCEPTANCE = {"hmc": 0.65, "mala": 0.57, "rwmh": 0.3}


class MoveParameters(NamedTuple):
    step_size: jax.Array  # ()
    inverse_mass_matrix: jax.Array  # (d,) diagonal: per coordinate, the particles' variance


def initial_parameters(positions, step_size=None, adapt=True):
    """Parameters from the particle cloud: variances (ones without ``adapt``:
    an identity metric), and ``step_size`` (by default 0.5 d^(-1/4), sensible
    once coordinates are scaled by the variances)."""
    d = positions.shape[1]
    default = 0.5 * d ** (-0.25)
    dtype = positions.dtype
    step = jnp.asarray(default if step_size is None else step_size, dtype)
    return MoveParameters(step, _variances(positions) if adapt else jnp.ones((d,), dtype))


def _variances(positions):
    variances = jnp.var(positions, axis=0)
    # a collapsed coordinate (all particles equal) would freeze: fall back to 1
    return jnp.where(variances > 1e-12, variances, jnp.ones_like(variances))


def tune(kind, positions, parameters, acceptance_rate, adapt_step_size, adapt_mass):
    """The next step's parameters: variances from the (moved) particles;
    the step size times exp(2 (acceptance - target)), within [1/2, 2]."""
    step_size = parameters.step_size
    if adapt_step_size:
        factor = jnp.clip(jnp.exp(2.0 * (acceptance_rate - TARGET_ACCEPTANCE[kind])), 0.5, 2.0)
        step_size = step_size * factor.astype(step_size.dtype)
    inverse_mass_matrix = _variances(positions) if adapt_mass else parameters.inverse_mass_matrix
    return MoveParameters(step_size, inverse_mass_matrix)


def _hmc(num_integration_steps):
    def step(key, state, log_density_fn, parameters):
        state, info = hmc_step(key, state, log_density_fn, parameters.step_size, parameters.inverse_mass_matrix,
                               num_integration_steps)
        return state, info.acceptance_rate

    return init, step


def _mala(_):
    def step(key, state, log_density_fn, parameters):
        state, info = mala_step(key, state, log_density_fn, parameters.step_size, parameters.inverse_mass_matrix)
        return state, info.acceptance_rate

    return init, step


def _rwmh(_):
    """Gaussian random walk, proposal covariance step_size^2 diag(variances);
    the state is (position, log density)."""

    def start(position, log_density_fn):
        return position, log_density_fn(position)

    def step(key, state, log_density_fn, parameters):
        position, log_density = state
        proposal_key, accept_key = jax.random.split(key)
        noise = jax.random.normal(proposal_key, position.shape, position.dtype)
        proposed = position + parameters.step_size * jnp.sqrt(parameters.inverse_mass_matrix) * noise
        proposed_log_density = log_density_fn(proposed)
        log_alpha = proposed_log_density - log_density
        log_alpha = jnp.where(jnp.isnan(log_alpha), -jnp.inf, log_alpha)
        accepted = jnp.log(jax.random.uniform(accept_key, (), position.dtype)) < log_alpha
        new = (jnp.where(accepted, proposed, position), jnp.where(accepted, proposed_log_density, log_density))
        return new, jnp.exp(jnp.minimum(log_alpha, 0.0))

    return start, step


MOVES = {"hmc": _hmc, "mala": _mala, "rwmh": _rwmh}


def move_function(kind, num_integration_steps=5):
    """``move(key, positions, log_density_fn, parameters, num_steps) ->
    (positions, (num_steps, N) acceptance rates)``: ``num_steps`` moves of every particle.

    >>> move = move_function("rwmh")
    >>> positions = jnp.zeros((100, 2))
    >>> moved, rates = move(jax.random.key(0), positions, lambda x: -0.5 * jnp.sum(x**2), initial_parameters(positions + 1.0), 3)
    >>> moved.shape, rates.shape
    ((100, 2), (3, 100))
    """
    if kind not in MOVES:
        raise ValueError(f"kernel must be one of {sorted(MOVES)}, got {kind!r}")
    start, step = MOVES[kind](num_integration_steps)

    def move(key, positions, log_density_fn, parameters, num_steps):
        def body(states, step_key):
            keys = jax.random.split(step_key, positions.shape[0])
            return jax.vmap(lambda k, s: step(k, s, log_density_fn, parameters))(keys, states)

        states = jax.vmap(lambda q: start(q, log_density_fn))(positions)
        states, rates = jax.lax.scan(body, states, jax.random.split(key, num_steps))
        return states[0], rates

    return move
