"""MCMC moves for SMC samplers on positions, tuned from the particles.

A move is ``move(key, positions, log_density_fn, parameters, num_steps) ->
(positions, acceptance rates, parameters)`` for all particles at once (a vmap of a kernel of
``ppl.inference.mcmc``). Its parameters come from the particle cloud: the
inverse mass matrix (or random-walk scale) from the particles' weighted
variances at the temperature they move at (``with_variances``), the step
size nudged towards a target acceptance rate (``tuned_step_size``): the
particle analogue of Stan's warmup (Buchholz, Chopin and Jacob 2021 tune
HMC moves in SMC from the particles).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.inference.mcmc.hmc import hmc_step, init
from ppl.inference.mcmc.mala import mala_step

__all__ = ["MoveParameters", "MOVES", "move_function", "with_variances", "tuned_step_size", "initial_parameters"]

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


def _variances(positions, log_weights=None):
    if log_weights is None:
        variances = jnp.var(positions, axis=0)
    else:
        weights = jnp.exp(log_weights)[:, None]
        mean = jnp.sum(weights * positions, axis=0)
        variances = jnp.sum(weights * (positions - mean) ** 2, axis=0)
    # a collapsed coordinate (all particles equal) would freeze: fall back to 1
    return jnp.where(variances > 1e-12, variances, jnp.ones_like(variances))


def with_variances(parameters, positions, log_weights):
    """``parameters`` with the metric set to the particles' weighted variances
    (``log_weights`` normalised): the cloud reweighted to the temperature it
    is about to move at, not the one it last moved at."""
    return parameters._replace(inverse_mass_matrix=_variances(positions, log_weights))


def tuned_step_size(kind, parameters, acceptance_rate):
    """The next step size: times exp(2 (acceptance - target)), within [1/4, 2]
    per step (a move that accepted nothing shrinks fast, one that accepted
    everything grows slower)."""
    factor = jnp.clip(jnp.exp(2.0 * (acceptance_rate - TARGET_ACCEPTANCE[kind])), 0.25, 2.0)
    return parameters._replace(step_size=parameters.step_size * factor.astype(parameters.step_size.dtype))


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


def move_function(kind, num_integration_steps=5, split=None, whole=None):
    """``move(key, positions, log_density_fn, parameters, num_steps, adapt=False)
    -> (positions, (num_steps, N) acceptance rates, parameters)``: ``num_steps``
    moves of every particle; with ``adapt``, the step size is tuned after each
    sweep from its mean acceptance (``tuned_step_size``). ``split`` places
    per-particle arrays (on their devices) and ``whole`` gathers the acceptance
    rates before their mean (identities by default: no sharding).

    >>> move = move_function("rwmh")
    >>> positions = jnp.zeros((100, 2))
    >>> moved, rates, _ = move(jax.random.key(0), positions, lambda x: -0.5 * jnp.sum(x**2), initial_parameters(positions + 1.0), 3)
    >>> moved.shape, rates.shape
    ((100, 2), (3, 100))
    """
    if kind not in MOVES:
        raise ValueError(f"kernel must be one of {sorted(MOVES)}, got {kind!r}")
    start, step = MOVES[kind](num_integration_steps)
    split = split or (lambda tree: tree)
    whole = whole or (lambda tree: tree)

    def move(key, positions, log_density_fn, parameters, num_steps, adapt=False):
        def body(carry, step_key):
            states, parameters = carry
            keys = split(jax.random.split(step_key, positions.shape[0]))
            states, rates = split(jax.vmap(lambda k, s: step(k, s, log_density_fn, parameters))(keys, states))
            # all particles move at once, so one sweep's mean acceptance already tells the next sweep's step size
            parameters = tuned_step_size(kind, parameters, jnp.mean(whole(rates))) if adapt else parameters
            return (states, parameters), rates

        states = split(jax.vmap(lambda q: start(q, log_density_fn))(positions))
        (states, parameters), rates = jax.lax.scan(body, (states, parameters), jax.random.split(key, num_steps))
        return states[0], rates, parameters

    return move
