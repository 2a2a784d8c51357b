"""The loop of ``smc.tempered`` (see ``tempered.py`` for the algorithm and
its arguments): prior draws, then reweight / resample / move steps in one
``lax.while_loop`` until beta reaches 1."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import ppl
from ppl.transforms import unconstrain
from ppl.inference.smc.filtering import replicate_weights, shard_particles
from ppl.inference.smc.moves import initial_parameters, move_function, with_variances
from ppl.inference.smc.resampling import effective_sample_size, normalise, resampler, uniform_log_weights

__all__ = ["run_tempered", "next_temperature"]


def _ess_fraction(log_weights, increments, delta, conditional):
    """ESS / N after multiplying the weights by exp(delta * increments)."""
    log_w = delta * increments
    if conditional:  # N (sum W w)^2 / sum W w^2 with W the current weights
        return jnp.exp(2 * jax.nn.logsumexp(log_weights + log_w) - jax.nn.logsumexp(log_weights + 2 * log_w))
    new = log_weights + log_w
    n = log_weights.shape[0]
    return jnp.exp(2 * jax.nn.logsumexp(new) - jax.nn.logsumexp(2 * new)) / n


def next_temperature(temperature, log_weights, log_likelihoods, target_ess, conditional=False, iterations=50):
    """The next beta in (temperature, 1] at which the ESS fraction is
    ``target_ess`` (1 if it stays above), by bisection.

    >>> log_likelihoods = jnp.linspace(-50.0, 0.0, 1000)
    >>> beta = next_temperature(0.0, jnp.full(1000, -jnp.log(1000.0)), log_likelihoods, 0.5)
    >>> bool(0.0 < beta < 1.0)
    True
    """
    log_likelihoods = jnp.where(jnp.isnan(log_likelihoods), -jnp.inf, log_likelihoods)
    fraction = lambda beta: _ess_fraction(log_weights, log_likelihoods, beta - temperature, conditional)

    def bisect(_, bounds):
        low, high = bounds
        middle = 0.5 * (low + high)
        above = fraction(middle) >= target_ess
        return jnp.where(above, middle, low), jnp.where(above, high, middle)

    one = jnp.ones_like(temperature)
    low, _ = jax.lax.fori_loop(0, iterations, bisect, (temperature, one))
    # never stall: move by at least a tiny step
    low = jnp.maximum(low, temperature + 1e-6 * (one - temperature))
    return jnp.where(fraction(one) >= target_ess, one, low)


class _Loop(NamedTuple):
    key: jax.Array
    positions: jax.Array
    log_likelihoods: jax.Array
    log_weights: jax.Array
    temperature: jax.Array
    log_z: jax.Array
    parameters: Any
    step: jax.Array
    temperatures: jax.Array
    ess: jax.Array
    acceptance: jax.Array
    step_sizes: jax.Array


def _prior_positions(key, model, args, observations, target, n):
    """N draws of the latents from the prior, as unconstrained positions."""

    def one(k):
        trace, _ = model.generate(k, observations, args)
        return target.unconstrain(trace.choices)

    return ppl.vmap_particles(one, n)(key)


def run_tempered(model, key, args, observations, n, settings, schedule):
    kind, target_ess, num_mcmc_steps, integration_steps, step_size, adapt, resample, conditional, waste_free, max_steps, mesh = settings
    target = unconstrain(model, args, observations)
    split, whole = functools.partial(shard_particles, mesh=mesh), functools.partial(replicate_weights, mesh=mesh)
    # per particle where the particles are; every reduction over particles on the whole vector
    parts = lambda positions: whole(jax.vmap(target.log_prior_and_likelihood)(split(positions)))
    move = move_function(kind, integration_steps, split, whole)
    init_key, loop_key = jax.random.split(key)
    positions = split(_prior_positions(init_key, model, args, observations, target, n))
    dtype = positions.dtype
    _, log_likelihoods = parts(positions)
    nan = jnp.full((max_steps,), jnp.nan, dtype)
    state = _Loop(loop_key, positions, log_likelihoods, uniform_log_weights(n, dtype),
                  jnp.zeros((), dtype), jnp.zeros((), dtype), initial_parameters(whole(positions), step_size, adapt),
                  jnp.zeros((), jnp.int32), jnp.ones((max_steps + 1,), dtype).at[0].set(0.0), nan, nan, nan)

    def tempered_density(beta):
        def log_density(q):
            prior, likelihood = target.log_prior_and_likelihood(q)
            return prior + beta * likelihood

        return log_density

    def step(state):
        key, resample_key, move_key = jax.random.split(state.key, 3)
        if schedule is None:
            beta = next_temperature(state.temperature, state.log_weights, state.log_likelihoods, target_ess, conditional)
        else:
            beta = schedule[state.step + 1].astype(dtype)
        increments = jnp.where(jnp.isnan(state.log_likelihoods), -jnp.inf, state.log_likelihoods)
        log_weights, total = normalise(state.log_weights + (beta - state.temperature) * increments)
        ess = effective_sample_size(log_weights)
        positions = state.positions
        # the metric from the cloud reweighted to the new temperature, where it moves
        parameters = with_variances(state.parameters, whole(positions), log_weights) if adapt else state.parameters
        if resample is not None:
            m = n // waste_free if waste_free else n
            ancestors = resampler(resample)(resample_key, log_weights, m)
            positions = split(positions[ancestors])
            log_weights = uniform_log_weights(n, dtype)
        density = tempered_density(beta)
        if waste_free:
            positions, rates, next_parameters = _waste_free_chains(move, move_key, positions, density, parameters,
                                                                   waste_free, adapt)
        else:
            positions, rates, next_parameters = move(move_key, positions, density, parameters, num_mcmc_steps, adapt)
        acceptance = jnp.mean(whole(rates))
        positions = split(positions)
        _, log_likelihoods = parts(positions)
        i = state.step
        return _Loop(key, positions, log_likelihoods, log_weights, beta, state.log_z + total, next_parameters, i + 1,
                     state.temperatures.at[i + 1].set(beta), state.ess.at[i].set(ess), state.acceptance.at[i].set(acceptance),
                     state.step_sizes.at[i].set(parameters.step_size))

    running = lambda state: (state.temperature < 1.0) & (state.step < max_steps)
    state = jax.lax.while_loop(running, step, state)
    particles = split(jax.vmap(target.trace)(state.positions))
    particles = ppl.Trace(particles.choices, particles.retval, args, particles.log_density)
    return (state.log_z, particles, state.positions, state.log_weights, state.temperatures, state.step,
            state.ess, state.acceptance, state.step_sizes)


def _waste_free_chains(move, key, starts, log_density_fn, parameters, length, adapt):
    """Every state of a (length - 1)-move chain from each of the M starts:
    (M * length, d) positions, chain-major, the acceptance rates and the
    parameters after the moves."""

    def body(carry, step_key):
        positions, parameters = carry
        moved, rates, parameters = move(step_key, positions, log_density_fn, parameters, 1, adapt)
        return (moved, parameters), (moved, rates[0])

    (_, parameters), (chain, rates) = jax.lax.scan(body, (starts, parameters), jax.random.split(key, length - 1))
    states = jnp.concatenate([starts[None], chain])  # (length, M, d)
    return jnp.swapaxes(states, 0, 1).reshape(-1, starts.shape[1]), rates, parameters
