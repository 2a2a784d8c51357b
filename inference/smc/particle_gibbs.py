"""Particle Gibbs: conditional SMC as an MCMC kernel over the states of a
model's scan (Andrieu, Doucet and Holenstein 2010), with ancestor sampling
(Lindsten, Jordan and Schön 2014, "Particle Gibbs with ancestor sampling").

One transition runs a particle filter in which one particle, the
reference, is the current trajectory; the other N - 1 are proposed as in
the bootstrap filter (or by a proposal) and resampled multinomially at every
step. The new trajectory is drawn from the final weights. With ancestor
sampling the reference also draws a new parent at each step, with weights
w_{t-1}^i p(x'_t, y_t | carry_{t-1}^i), so the new trajectory can leave the
old one early and the kernel mixes even with few particles (path
degeneracy makes plain particle Gibbs stick at the early steps).

The prefix (everything before the scan: parameters, the initial state) is
held at the current trace's values: compose with another kernel for it
(``mcmc.cycle(mcmc.mh(model, ["theta"]), particle_gibbs(...))``).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import ppl
from ppl.choicemap import by_path, from_paths
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.smc.filtering import _latent
from ppl.inference.smc.markov import scan_of
from ppl.inference.smc.particle_filter import trajectories
from ppl.inference.smc.resampling import gather, multinomial, normalise
from ppl.sequential import run_prefix

__all__ = ["ParticleGibbsState", "ParticleGibbsInfo", "particle_gibbs"]


class ParticleGibbsState(NamedTuple):
    trace: Any  # the model's trace: the current trajectory, its prefix and observations


class ParticleGibbsInfo(NamedTuple):
    update_rate: jax.Array  # the fraction of the scan's steps whose latent choices changed
    log_marginal_likelihood: jax.Array  # the conditional filter's log estimate of p(y | prefix)


def particle_gibbs(model, args, observations, num_particles, *, ancestor_sampling=True, proposal=None):
    """A ``Kernel`` on traces of ``model`` (which makes one ``gf.scan(T)``)
    that redraws every step's latent choices given the prefix and the
    observations, by conditional SMC with ``num_particles`` particles.

    - ``observations``: as ``smc.particle_filter``'s, e.g. ``{"y0": y0, "steps": {"y": ys}}``.
    - ``ancestor_sampling``: draw the reference's parent at every step (exact
      when a step's carry is a function of its own choices and ``x``, as in a
      state-space model whose carry is the state: checked when the kernel is
      built); False gives plain particle Gibbs, exact for any scan.
    - ``proposal``: None (each step's latents from the model) or a generative
      function ``proposal(carry, x, observation)``, as in ``particle_filter``.

    ``init(start)`` takes a trace of the model or a choice map of all its latent
    choices; ``step(key, state) -> (ParticleGibbsState, ParticleGibbsInfo)``.

    >>> from tests.smc_models import linear_gaussian, lg_data
    >>> _, _, observations = lg_data(10)
    >>> kernel = smc.particle_gibbs(linear_gaussian, (10,), observations, 8)
    >>> state = kernel.init({"x0": 0.0, "steps": {"x": jnp.zeros(10)}})
    >>> state, info = kernel.step(jax.random.key(1), state)
    >>> state.trace.choices["steps"]["x"].shape, bool(info.update_rate > 0)
    ((10,), True)
    """
    if not isinstance(num_particles, int) or num_particles < 2:
        raise ValueError(f"num_particles must be a Python int >= 2 (one is the reference), got {num_particles!r}")
    args = tuple(args)
    observations = ppl.choicemap.to_arrays(observations or {})
    site, outside, inside = scan_of(model, args, observations, "particle_gibbs(ancestor_sampling=True)" if ancestor_sampling
                                    else None, "Pass ancestor_sampling=False (plain particle Gibbs, exact for any scan)")

    def init(start):
        if isinstance(start, ppl.Trace):  # a composition's trace: already the model's, observations included
            return ParticleGibbsState(start)
        trace, _ = model.generate(jax.random.key(0), ppl.merge(ppl.choicemap.to_arrays(start), observations), args)
        return ParticleGibbsState(trace)

    def step(key, state):
        return _conditional_smc(key, model, args, site, outside, inside, state.trace, num_particles,
                                ancestor_sampling, proposal)

    return Kernel(init, step)


def _step_latents(choices, path, inside):
    """The scan's latent choices (stacked over steps) in a choice map of the model."""
    observed = set(by_path(inside))
    flat = {p[len(path):]: v for p, v in by_path(choices).items() if p[: len(path)] == path}
    return from_paths({p: v for p, v in flat.items() if p not in observed})


def _conditional_smc(key, model, args, site, outside, inside, trace, n, ancestor_sampling, proposal):
    path, step_gf = site.path, site.step
    prefix = {p: v for p, v in by_path(trace.choices).items() if p[: len(path)] != path}
    start = run_prefix(jax.random.key(0), model, args, from_paths(prefix), path)  # everything given: no draws
    reference = _step_latents(trace.choices, path, inside)
    carries = jax.tree.map(lambda c: jnp.broadcast_to(c, (n,) + jnp.shape(c)), start.init_carry)
    dtype = jnp.result_type(float)
    log_weights = jnp.full((n,), -jnp.log(jnp.asarray(n, dtype)), dtype)

    def body(state, inputs):
        carries, log_weights, log_z = state
        k, observation, x, ref = inputs
        ancestor_key, parent_key, move_key, ref_key = jax.random.split(k, 4)
        given = ppl.merge(ref, observation) if by_path(observation) else ref
        ancestors = multinomial(ancestor_key, log_weights, n).astype(jnp.int32)
        if ancestor_sampling:  # the reference's parent: w_{t-1}^i p(x'_t, y_t | carry^i)
            joint = jax.vmap(lambda c: step_gf.assess(given, (c, x))[0])(carries)
            ancestors = ancestors.at[n - 1].set(jax.random.categorical(parent_key, log_weights + joint).astype(jnp.int32))
        else:
            ancestors = ancestors.at[n - 1].set(n - 1)
        parents = gather(carries, ancestors)
        traces, increments = ppl.vmap_particles(lambda kk, c: _extend(kk, step_gf, proposal, c, x, observation), n)(
            move_key, parents)
        parent = jax.tree.map(lambda c: c[n - 1], parents)
        ref_trace, ref_increment = _reference(ref_key, step_gf, proposal, parent, x, observation, given, ref)
        traces = jax.tree.map(lambda a, r: a.at[n - 1].set(r), traces, ref_trace)
        increments = increments.at[n - 1].set(ref_increment)
        log_weights, total = normalise(increments - jnp.log(jnp.asarray(n, dtype)))
        carry, _ = traces.retval
        latents = _latent(traces.choices, tuple(by_path(observation)))
        return (carry, log_weights, log_z + total), (latents, ancestors)

    keys = jax.random.split(key, site.length + 1)
    inputs = (keys[:-1], inside, start.xs, reference)
    (_, log_weights, log_z), (latents, ancestors) = jax.lax.scan(
        body, (carries, log_weights, jnp.zeros((), dtype)), inputs)
    chosen = jax.random.categorical(keys[-1], log_weights)
    steps = jax.tree.map(lambda v: v[chosen], trajectories(latents, ancestors))
    # the model's trace of the new trajectory, as generate makes it (so it
    # composes with the other trace kernels, whose traces keep their sites)
    new, _ = model.generate(jax.random.key(0), ppl.merge(from_paths(prefix), _at(path, steps), _at(path, inside)), args)
    return ParticleGibbsState(new), ParticleGibbsInfo(_changed(steps, reference), log_z)


def _at(path, choices):
    """``choices`` nested under the address ``path``."""
    return from_paths({path + p: v for p, v in by_path(choices).items()})


def _extend(key, step_gf, proposal, carry, x, observation):
    """A free particle's step and its incremental log weight (as ``filter_step``)."""
    if proposal is None:
        return step_gf.generate(key, observation, (carry, x))
    proposal_key, step_key = jax.random.split(key)
    proposed = proposal.simulate(proposal_key, (carry, x, observation))
    trace, log_weight = step_gf.generate(step_key, ppl.merge(proposed.choices, observation), (carry, x))
    return trace, log_weight - proposed.log_density


def _reference(key, step_gf, proposal, carry, x, observation, given, ref):
    """The reference particle's step and the weight a free particle with its
    choices would have had: p(x'_t, y_t | carry) / q(x'_t)."""
    trace, _ = step_gf.generate(key, given, (carry, x))
    if proposal is None:  # q is the model's own transition: the latents' site densities
        densities = by_path(ppl.site_log_densities(step_gf, given, (carry, x)))
        latent = set(by_path(ref))
        q = sum(jnp.sum(v) for p, v in densities.items() if p in latent)
    else:
        q, _ = proposal.assess(ref, (carry, x, observation))
    return trace, trace.log_density - q


def _changed(steps, reference):
    """The fraction of steps at which some latent choice differs."""
    differs = [jnp.any((a != b).reshape(a.shape[0], -1), axis=1) for a, b in
               zip(jax.tree.leaves(steps), jax.tree.leaves(reference))]
    return jnp.mean(jnp.any(jnp.stack(differs), axis=0).astype(jnp.result_type(float)))
