"""Programmable SMC: a particle collection and the steps a user composes
into their own SMC loop (the spawn / advance / resample / move decomposition
of Scibior et al., POPL 2018; Gen's particle lifecycle).

A ``ParticleCollection`` holds N traces (a ``ppl.Trace`` with a leading
particle axis), normalised log weights and the running log marginal
likelihood estimate. Every step keeps that estimate unbiased in Z:

- ``init``: N particles of a model from ``generate``, optionally with a proposal;
- ``extend``: every trace ``update``d to a model with new arguments and more
  observations (new choices from the model, or from a proposal);
- ``change``: reweight to a new target on the same choices (tempering);
- ``resample``: by any scheme, always or when the ESS is low;
- ``rejuvenate``: an MCMC kernel (``ppl.inference.mcmc``) on every trace.

Each is compiled once per model, shapes and settings (a kernel object, a
resampling scheme), so a Python loop of them runs at compiled speed.

``init(..., devices=...)`` splits the particles across devices; every later
step sees that from the traces' sharding and keeps them split, while the
weights, the ESS and the resampling use the whole weight vector in the
single-device order (a sharded run equals the unsharded one).
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

import ppl
from ppl.choicemap import by_path, from_paths
from ppl.errors import MissingValueError
from ppl.jit import jit_gfi
from ppl.inference.smc.filtering import particle_mesh, replicate_weights, shard_particles
from ppl.inference.smc.resampling import effective_sample_size, gather, normalise, resampler, uniform_log_weights

__all__ = ["ParticleCollection", "init", "extend", "change", "resample", "rejuvenate"]


class ParticleCollection(NamedTuple):
    """N weighted traces and the log marginal likelihood estimate so far."""

    traces: Any  # ppl.Trace with a leading particle axis
    log_weights: jax.Array  # (N,) normalised: logsumexp 0
    log_marginal_likelihood: jax.Array  # ()

    @property
    def num_particles(self):
        return self.log_weights.shape[0]

    @property
    def ess(self):
        return effective_sample_size(self.log_weights)


def _reweighted(particles, traces, increments, mesh=None):
    """The collection with each particle's weight multiplied by exp(increment)."""
    normalised, total = normalise(replicate_weights(particles.log_weights + increments, mesh))
    return ParticleCollection(shard_particles(traces, mesh), normalised, particles.log_marginal_likelihood + total)


def _mesh_of(particles):
    """The mesh the particles were split across by ``init(..., devices=...)``,
    read from their traces' sharding (None: one device, or inside a trace)."""
    for leaf in jax.tree.leaves(particles.traces):
        if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array) or not jnp.ndim(leaf):
            continue
        sharding = leaf.sharding
        if not isinstance(sharding, NamedSharding):
            continue
        if sharding.mesh.axis_names == ("particles",) and sharding.spec and sharding.spec[0] == "particles":
            return sharding.mesh
    return None


def _proposed(key, model, constraints, args, proposal, proposal_args, start):
    """``(trace, log weight)`` of one particle: ``start(key, constraints)`` with
    the proposal's choices added to the constraints, weight less log q."""
    if proposal is None:
        return start(key, constraints)
    proposal_key, model_key = jax.random.split(key)
    proposed = proposal.simulate(proposal_key, proposal_args)
    trace, log_weight = start(model_key, ppl.merge(proposed.choices, constraints))
    return trace, log_weight - proposed.log_density


def init(key, model, args, observations, num_particles, *, proposal=None, proposal_args=(), devices=None):
    """N particles of ``model`` given ``observations``: from the model
    (``generate``) or from ``proposal(*proposal_args)`` over the latents.
    ``devices``: None, ``"all"`` or a list of devices to split the particles
    across (N a multiple of their number); the later steps keep them split.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> particles = smc.init(jax.random.key(0), model, (), {"y": 0.5}, 1000)
    >>> particles.traces.choices["mu"].shape, particles.log_weights.shape
    ((1000,), (1000,))
    """
    return _init(model, key, tuple(args), ppl.choicemap.to_arrays(observations or {}), num_particles, proposal,
                 tuple(proposal_args), particle_mesh(devices, num_particles))


@jit_gfi(constraints_arg=2)
def _init(model, key, args, observations, num_particles, proposal, proposal_args, mesh):
    start = lambda k, constraints: model.generate(k, constraints, args)
    one = lambda k: _proposed(k, model, observations, args, proposal, proposal_args, start)
    traces, log_weights = ppl.vmap_particles(one, num_particles)(key)
    empty = ParticleCollection(traces, uniform_log_weights(num_particles, log_weights.dtype), jnp.zeros((), log_weights.dtype))
    return _reweighted(empty, traces, log_weights, mesh)


def extend(key, particles, model, args, observations, *, proposal=None, proposal_args=()):
    """Every trace ``update``d to ``model(*args)`` with ``observations`` (for
    example one more step of a scan: a longer ``T`` and one more observation).
    New choices come from the model, or from ``proposal(trace, *proposal_args)``
    (a generative function of the particle's current trace). The incremental
    weight is update's: p(new trace) / (p(old trace) q(new choices)).

    A choice the old trace has keeps its value, so it must keep its shape:
    new steps go at new addresses (Gen's unrolled form, below); a
    ``gf.scan`` model is advanced step by step by ``smc.particle_filter``.

    >>> @ppl.gen
    ... def walk(T):
    ...     x = 0.0
    ...     for t in range(T):
    ...         x = ppl.sample(f"x{t}", dist.Normal(x, 1.0))
    >>> particles = smc.init(jax.random.key(0), walk, (2,), {}, 100)
    >>> longer = smc.extend(jax.random.key(1), particles, walk, (3,), {})
    >>> sorted(longer.traces.choices), longer.traces.choices["x2"].shape
    (['x0', 'x1', 'x2'], (100,))
    """
    return _extend(model, key, particles, tuple(args), ppl.choicemap.to_arrays(observations or {}), proposal,
                   tuple(proposal_args), _mesh_of(particles))


@jit_gfi(constraints_arg=3)
def _extend(model, key, particles, args, observations, proposal, proposal_args, mesh):
    _check_shapes_kept(model, args, particles.traces.choices)

    def one(k, trace):
        start = lambda k2, constraints: model.update(k2, trace, constraints, args)[:2]
        return _proposed(k, model, observations, args, proposal, (trace, *proposal_args), start)

    keys = shard_particles(jax.random.split(key, particles.num_particles), mesh)
    traces, increments = jax.vmap(one)(keys, particles.traces)
    return _reweighted(particles, traces, increments, mesh)


def _check_shapes_kept(model, args, choices):
    """At trace time: a choice the old traces hold keeps its shape in the new model."""
    new = by_path(jax.eval_shape(lambda key: model.simulate(key, args).choices, jax.random.key(0)))
    for path, old in by_path(choices).items():
        if path in new and tuple(new[path].shape) != tuple(jnp.shape(old))[1:]:
            raise ValueError(
                f"address {ppl.errors.format_address(path)!r} has shape {tuple(jnp.shape(old))[1:]} in the particles "
                f"and {tuple(new[path].shape)} in the new model; extend keeps old values, so give new steps new "
                "addresses (f\"x{t}\"), or use smc.particle_filter for a gf.scan"
            )


def change(particles, model, args, observations=None):
    """Reweight every particle to a new target on the same choices:
    ``model(*args)`` with ``observations`` replacing the old ones (for example
    a likelihood tempered by a new exponent). The incremental weight is
    p_new(choices) / p_old(choices); a choice the new model makes that the old
    trace lacks is an error (that is ``extend``). A Python float argument
    (``(0.5,)``) is static, so each new value compiles anew: in a loop, pass
    an array (``(jnp.asarray(beta),)``).

    >>> @ppl.gen
    ... def tempered(beta):
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.factor("likelihood", beta * dist.Normal(mu, 0.5).log_prob(2.0))
    >>> particles = smc.init(jax.random.key(0), tempered, (0.0,), {}, 1000)
    >>> hotter = smc.change(particles, tempered, (0.5,))
    >>> bool(hotter.ess < particles.ess)
    True
    """
    observations = ppl.choicemap.to_arrays(observations or {})
    args = tuple(args)

    replaced = set(by_path(observations)) if observations else set()

    def one(trace):
        # Factor terms show in traces under their address; constraining one is
        # harmless (the new model recomputes it).
        kept = from_paths({p: v for p, v in by_path(trace.choices).items() if p not in replaced})
        constraints = ppl.merge(kept, observations)
        _check_no_new_choices(model, constraints, args)
        new, log_density = model.generate(jax.random.key(0), constraints, args)
        return new, log_density - trace.log_density

    traces, increments = jax.vmap(one)(particles.traces)
    return _reweighted(particles, traces, increments, _mesh_of(particles))


def _check_no_new_choices(model, constraints, args):
    """At trace time: ``assess`` needs a value for every choice the new model makes."""
    try:
        jax.eval_shape(lambda c: model.assess(c, args), constraints)
    except MissingValueError as error:
        raise ValueError(f"smc.change reweights the same choices, but {error}; use smc.extend to add choices") from None


def resample(key, particles, *, method="systematic", ess_threshold=1.0):
    """``(particles, ancestors)``: resampled by ``method`` when the ESS is
    below ``ess_threshold * N`` (1.0: always), weights then uniform; the log
    marginal likelihood estimate is unchanged (weights are normalised).

    >>> particles = ParticleCollection(jnp.arange(4.0), jnp.log(jnp.array([0.7, 0.1, 0.1, 0.1])), jnp.zeros(()))
    >>> resampled, ancestors = smc.resample(jax.random.key(0), particles)
    >>> resampled.log_weights.shape, int(ancestors.shape[0])
    ((4,), 4)
    """
    resampler(method)  # a bad name fails here
    return _resample(key, particles, method, float(ess_threshold), _mesh_of(particles))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _resample(key, particles, method, ess_threshold, mesh):
    n = particles.num_particles
    log_weights = replicate_weights(particles.log_weights, mesh)
    ancestors = resampler(method)(key, log_weights).astype(jnp.int32)
    if ess_threshold < 1.0:
        do = effective_sample_size(log_weights) < ess_threshold * n
        ancestors = jnp.where(do, ancestors, jnp.arange(n, dtype=jnp.int32))
    else:
        do = jnp.bool_(True)
    traces = shard_particles(gather(particles.traces, ancestors), mesh)
    uniform = uniform_log_weights(n, particles.log_weights.dtype)
    return ParticleCollection(traces, jnp.where(do, uniform, particles.log_weights), particles.log_marginal_likelihood), ancestors


def rejuvenate(key, particles, kernel, num_steps=1):
    """``(particles, acceptance rate)``: every trace moved by ``num_steps`` of an
    MCMC kernel on traces (``mcmc.mh``, ``mcmc.gibbs``, a cycle, ...), which
    leaves each particle's target, so the weighting, intact.

    >>> @ppl.gen
    ... def model():
    ...     ppl.sample("mu", dist.Normal(0.0, 1.0))
    >>> particles = smc.init(jax.random.key(0), model, (), {}, 100)
    >>> moved, rate = smc.rejuvenate(jax.random.key(1), particles, mcmc.mh(model, ["mu"]))
    >>> moved.traces.choices["mu"].shape
    (100,)
    """
    return _rejuvenate(key, particles, kernel, int(num_steps), _mesh_of(particles))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _rejuvenate(key, particles, kernel, num_steps, mesh):
    def one(k, trace):
        def body(state, step_key):
            state, info = kernel.step(step_key, state)
            return state, info.acceptance_rate

        state, rates = jax.lax.scan(body, kernel.init(trace), jax.random.split(k, num_steps))
        return state.trace, jnp.mean(rates)

    keys = shard_particles(jax.random.split(key, particles.num_particles), mesh)
    traces, rates = jax.vmap(one)(keys, particles.traces)
    return particles._replace(traces=shard_particles(traces, mesh)), jnp.mean(replicate_weights(rates, mesh))
