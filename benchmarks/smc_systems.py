"""The systems of the SMC benchmark: the bootstrap particle filter on a 1-D
linear-Gaussian state-space model (T = 100 steps, systematic resampling at
every step) through ``smc.particle_filter`` and hand-written in JAX.

The hand-written filter computes what ``smc.particle_filter`` returns: the log
marginal likelihood, each step's particles, weights, ancestors and ESS, and
the final particles' whole trajectories (traced back through the ancestors)
with their log densities. A leaner hand-written filter computes log Z only.
"""

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

import ppl
from ppl import dist
from ppl.inference import smc

__all__ = ["A", "Q", "R", "S0", "STEPS", "model", "data", "ppl_filter", "hand_filter", "hand_log_z_only"]

A, Q, R, S0 = 0.9, 0.5, 0.8, 1.0
STEPS = 100


@ppl.gen
def step(x, _):
    x = ppl.sample("x", dist.Normal(A * x, Q))
    ppl.sample("y", dist.Normal(x, R))
    return x, None


@ppl.gen
def model(T):
    x0 = ppl.sample("x0", dist.Normal(0.0, S0))
    ppl.sample("y0", dist.Normal(x0, R))
    return ppl.sample("steps", step.scan(T)(x0, None))


def data(seed=0):
    trace = model.simulate(jax.random.key(seed), (STEPS,))
    return trace.choices["y0"], trace.choices["steps"]["y"]


def ppl_filter(n):
    """``f(key, y0, ys) -> ParticleFilterResult``, jitted."""

    def run(key, y0, ys):
        return smc.particle_filter(key, model, (STEPS,), {"y0": y0, "steps": {"y": ys}}, n, ess_threshold=1.0)

    return jax.jit(run)


def _systematic(key, log_weights):
    n = log_weights.shape[0]
    edges = jnp.cumsum(jnp.exp(log_weights))
    points = (jax.random.uniform(key, (), log_weights.dtype) + jnp.arange(n, dtype=log_weights.dtype)) / n
    return jnp.minimum(jnp.searchsorted(edges, points * edges[-1]), n - 1).astype(jnp.int32)


def _normalise(log_weights):
    total = jax.nn.logsumexp(log_weights)
    return log_weights - total, total


def _ess(log_weights):
    return 1.0 / jnp.sum(jnp.exp(2.0 * log_weights))


def hand_filter(n):
    """The same filter and outputs, written directly in JAX."""

    def run(key, y0, ys):
        init_key, resample_key, steps_key = jax.random.split(key, 3)
        x0 = S0 * jax.random.normal(init_key, (n,))
        log_weights, total = _normalise(norm.logpdf(y0, x0, R))
        log_z, first_ess = total - jnp.log(n), _ess(log_weights)
        x0 = x0[_systematic(resample_key, log_weights)]

        def body(carry, inputs):
            x, x0, log_density, log_z = carry
            k, y = inputs
            move_key, resample_key = jax.random.split(k)
            new = A * x + Q * jax.random.normal(move_key, (n,))
            increment = norm.logpdf(y, new, R)
            log_weights, total = _normalise(increment - jnp.log(n))
            ancestors = _systematic(resample_key, log_weights)
            new, log_density = new[ancestors], log_density[ancestors] + norm.logpdf(new[ancestors], A * x[ancestors], Q)
            log_density = log_density + increment[ancestors]
            uniform = jnp.full((n,), -jnp.log(n))
            return (new, x0[ancestors], log_density, log_z + total), (new, uniform, ancestors, _ess(log_weights))

        keys = jax.random.split(steps_key, STEPS)
        carry = (x0, x0, jnp.zeros(n), log_z)
        (x, x0, log_density, log_z), (xs, weights, ancestors, ess) = jax.lax.scan(body, carry, (keys, ys))
        trajectories = smc.trajectories(xs, ancestors)
        log_density = log_density + norm.logpdf(x0, 0.0, S0) + norm.logpdf(y0, x0, R)
        return log_z, trajectories, log_density, weights[-1], jnp.concatenate([first_ess[None], ess]), ancestors, xs, weights

    return jax.jit(run)


def hand_log_z_only(n):
    """The bootstrap filter's log Z alone: no history, no trajectories."""

    def run(key, y0, ys):
        init_key, steps_key = jax.random.split(key)
        x = S0 * jax.random.normal(init_key, (n,))
        log_weights, log_z = _normalise(norm.logpdf(y0, x, R))

        def body(carry, inputs):
            x, log_weights, log_z = carry
            k, y = inputs
            resample_key, move_key = jax.random.split(k)
            x = x[_systematic(resample_key, log_weights)]
            x = A * x + Q * jax.random.normal(move_key, (n,))
            log_weights, total = _normalise(norm.logpdf(y, x, R) - jnp.log(n))
            return (x, log_weights, log_z + total), None

        keys = jax.random.split(steps_key, STEPS)
        (_, _, log_z), _ = jax.lax.scan(body, (x, log_weights, log_z - jnp.log(n)), (keys, ys))
        return log_z

    return jax.jit(run)
