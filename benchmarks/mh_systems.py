"""The systems compared in the MH-step benchmark.

A Gaussian random walk of 100 scalar latents, each its own
``ppl.sample(f"z{i}", ...)``, observed through one vector site ``y``:
``z0 ~ Normal(0, 1)``, ``z_i ~ Normal(z_{i-1}, 0.5)``, ``y ~ Normal(z, 1)``.
One step redraws ``z37`` from its prior conditional ``Normal(z36, 0.5)`` and
accepts with probability ``min(1, exp(log_weight))``. Every chain is
``fn(key, state) -> (state, (z37 per step, accepted per step))``: ``steps``
steps inside one jitted ``lax.scan``.
"""

import collections
import zlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

import ppl
from ppl import dist
from ppl.gen import site_key

__all__ = [
    "NUM_LATENTS",
    "SITE",
    "STEPS",
    "BODY_RUNS",
    "BASELINE",
    "PPL",
    "SYSTEMS",
    "DIAGNOSTICS",
    "make_ppl_model",
    "make_data",
    "hand_log_density",
    "hand_weight",
    "initial_states",
]

NUM_LATENTS, SITE = 100, 37
INIT_SCALE, STEP_SCALE, NOISE_SCALE = 1.0, 0.5, 1.0
STEPS = 2000  # MH steps per timed call
BASELINE, PPL = "hand-written JAX", "ppl regenerate"
BODY_RUNS = collections.Counter()  # Python executions of the ppl model body


def make_ppl_model(num_latents=NUM_LATENTS):
    """A fresh model object (nothing compiled for another is reused); its body
    counts its own Python executions in ``BODY_RUNS``."""

    @ppl.gen
    def random_walk():
        BODY_RUNS["random_walk"] += 1
        z, zs = 0.0, []
        for i in range(num_latents):
            z = ppl.sample(f"z{i}", dist.Normal(z, STEP_SCALE if i else INIT_SCALE))
            zs.append(z)
        return ppl.sample("y", dist.Normal(jnp.stack(zs), NOISE_SCALE))

    return random_walk


def make_data(seed=0):
    """Observations ``y`` drawn from the model (NumPy RNG), in the default float dtype."""
    rng = np.random.default_rng(seed)
    scales = np.r_[INIT_SCALE, np.full(NUM_LATENTS - 1, STEP_SCALE)]
    z = np.cumsum(rng.normal(0.0, scales))
    return jnp.asarray(z + rng.normal(0.0, NOISE_SCALE, NUM_LATENTS), dtype=jnp.result_type(float))


def _scanned(step, steps):
    return jax.jit(lambda key, state: jax.lax.scan(step, state, jax.random.split(key, steps)))


def _accept(key, log_weight):
    return jnp.log(jax.random.uniform(key)) < log_weight


# ----- ppl ------------------------------------------------------------------------


def ppl_chain(model, steps=STEPS, keep_sites=True):
    """MH steps through the GFI. ``keep_sites=False`` regenerates from a trace
    rebuilt from its four public fields, which regenerate scores first: the
    old trace is run again at every step, as every regenerate did before
    traces kept what it needs."""
    selection = ppl.select(f"z{SITE}")

    def step(trace, key):
        proposal_key, accept_key = jax.random.split(key)
        current = trace if keep_sites else ppl.Trace(trace.choices, trace.retval, trace.args, trace.log_density)
        proposed, log_weight = model.regenerate(proposal_key, current, selection, trace.args)
        if not keep_sites:
            proposed = ppl.Trace(proposed.choices, proposed.retval, proposed.args, proposed.log_density)
        accept = _accept(accept_key, log_weight)
        trace = jax.tree.map(lambda new, old: jnp.where(accept, new, old), proposed, trace)
        return trace, (trace.choices[f"z{SITE}"], accept)

    return _scanned(step, steps)


# ----- hand-written ------------------------------------------------------------------


def hand_log_density(z, y):
    """The model's log density of the 100 latents ``z`` (a vector) and observations ``y``."""
    prior = norm.logpdf(z[0], 0.0, INIT_SCALE) + jnp.sum(norm.logpdf(z[1:], z[:-1], STEP_SCALE))
    return prior + jnp.sum(norm.logpdf(y, z, NOISE_SCALE))


def hand_weight(z, log_density, proposed, y):
    """``(new z, its log density, log MH ratio)`` of the proposal ``z37 -> proposed``."""
    parent = z[SITE - 1]
    new_z = z.at[SITE].set(proposed)
    new_log_density = hand_log_density(new_z, y)
    log_q = lambda value: norm.logpdf(value, parent, STEP_SCALE)
    return new_z, new_log_density, new_log_density - log_density - log_q(proposed) + log_q(z[SITE])


def hand_chain(steps=STEPS):
    """The same MH steps hand-written: state ``(z, log density, y)``, ``z`` a vector."""

    def step(state, key):
        z, log_density, y = state
        proposal_key, accept_key = jax.random.split(key)
        proposed = z[SITE - 1] + STEP_SCALE * jax.random.normal(proposal_key, dtype=z.dtype)
        new_z, new_log_density, log_weight = hand_weight(z, log_density, proposed, y)
        accept = _accept(accept_key, log_weight)
        z = jnp.where(accept, new_z, z)
        return (z, jnp.where(accept, new_log_density, log_density), y), (z[SITE], accept)

    return _scanned(step, steps)


def hand_scalar_chain(steps=STEPS):
    """Hand-written as ppl computes it: the 100 latents as separate scalars, the
    proposal drawn from ppl's key for the address ``z37`` (``site_key``)."""

    def log_density_fn(zs, y):
        total, parent = 0.0, 0.0
        for i, z in enumerate(zs):
            total, parent = total + norm.logpdf(z, parent, STEP_SCALE if i else INIT_SCALE), z
        return total + jnp.sum(norm.logpdf(y, jnp.stack(zs), NOISE_SCALE))

    def step(state, key):
        zs, log_density, y = state
        proposal_key, accept_key = jax.random.split(key)
        parent = zs[SITE - 1]
        draw_key = site_key(proposal_key, f"z{SITE}")
        proposed = parent + STEP_SCALE * jax.random.normal(draw_key, dtype=y.dtype)
        new_zs = zs[:SITE] + (proposed,) + zs[SITE + 1 :]
        new_log_density = log_density_fn(new_zs, y)
        log_q = lambda value: norm.logpdf(value, parent, STEP_SCALE)
        accept = _accept(accept_key, new_log_density - log_density - log_q(proposed) + log_q(zs[SITE]))
        zs = tuple(jnp.where(accept, new, old) for new, old in zip(new_zs, zs))
        return (zs, jnp.where(accept, new_log_density, log_density), y), (zs[SITE], accept)

    return _scanned(step, steps)


def initial_states(model, y):
    """The same starting point for every system: ppl's trace given ``y``, as
    each system holds it."""
    trace, _ = model.generate(jax.random.key(0), {"y": y}, ())
    zs = tuple(trace.choices[f"z{i}"] for i in range(NUM_LATENTS))
    z = jnp.stack(zs)
    log_density = hand_log_density(z, y)
    plain = ppl.Trace(trace.choices, trace.retval, trace.args, trace.log_density)
    return {"ppl": trace, "ppl, plain": plain, "vector": (z, log_density, y), "scalars": (zs, log_density, y)}


# name -> (fresh chain from a fresh ppl model, the kind of state it takes)
SYSTEMS = {
    BASELINE: (lambda model: hand_chain(), "vector"),
    PPL: (lambda model: ppl_chain(model), "ppl"),
}
DIAGNOSTICS = {
    "hand, 100 scalars + ppl's keys": (
        lambda model: hand_scalar_chain(),
        "scalars",
        "hand-written with the latents as 100 separate scalars (as the model's 100 sites are) and the proposal "
        "drawn from ppl's key for the address z37: the same program as ppl's step, written out",
    ),
    "ppl, old trace scored each step": (
        lambda model: ppl_chain(model, keep_sites=False),
        "ppl, plain",
        "regenerate on a trace rebuilt from its four public fields, which it scores first (one more run of the "
        "model on the old trace, as every regenerate did before traces kept what it needs)",
    ),
}
