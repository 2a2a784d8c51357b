"""The particle filter's state machine, one observation at a time.

``filter_init`` runs the model's prefix (everything before its scan) for N
particles; ``filter_step`` advances every particle one step of the scan:
propose the step's latent choices (from the model, or from a proposal
generative function), weight by the step's observations, resample when the
effective sample size falls below ``ess_threshold * N``, and optionally move
each particle with an MCMC kernel on its step (resample-move; Gilks and
Berzuini 2001). States and infos are NamedTuples of arrays, so the filter
runs inside ``jax.jit``, ``lax.scan`` and ``jax.vmap``.

Weights are kept normalised (log-sum-exp 0) and the log marginal likelihood
estimate accumulates the log of each step's mean incremental weight, the
estimator that is unbiased in Z for every resampling scheme (Del Moral 2004).
"""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import ppl
from ppl.jit import jit_gfi
from ppl.choicemap import by_path, from_paths
from ppl.sequential import run_prefix, scan_sites, split_observations
from ppl.inference.smc.resampling import effective_sample_size, gather, normalise, resampler, uniform_log_weights

__all__ = ["FilterSettings", "FilterState", "FilterInfo", "filter_init", "filter_step", "find_scan", "particle_mesh", "shard_particles"]


@dataclasses.dataclass(frozen=True)
class FilterSettings:
    """What stays fixed during a filter run (static: part of the compiled program)."""

    step: Any  # the scan's step generative function, step(carry, x) -> (carry, y)
    path: tuple  # the scan's address
    proposal: Any  # None (the model's own step) or proposal(carry, x, observation)
    resample: str
    ess_threshold: float
    rejuvenate: Any  # None or an MCMC kernel on traces of ``step``
    length: int  # the scan's number of steps in the model
    mesh: Any = None  # None, or a jax.sharding.Mesh with one axis, "particles", to split the particles across


jax.tree_util.register_static(FilterSettings)


def particle_mesh(devices, num_particles):
    """None (no sharding), or a one-axis mesh ("particles") over ``devices``:
    ``"all"`` (every device) or a sequence of devices."""
    if devices is None:
        return None
    devices = jax.devices() if isinstance(devices, str) and devices == "all" else list(devices)
    if not devices or num_particles % len(devices):
        raise ValueError(
            f"devices: {len(devices)} device(s) cannot split num_particles={num_particles} evenly; "
            "use a multiple of the device count"
        )
    return Mesh(np.array(devices), ("particles",))


def shard_particles(tree, mesh, spec=PartitionSpec("particles")):
    """Every leaf of ``tree`` (leading axis: particles) split across ``mesh``
    (nothing without one)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding) if jnp.ndim(x) else x, tree)


def replicate_weights(log_weights, mesh):
    """The (N,) log weights whole on every device. The particles stay split;
    the weights' sums, the ESS and the resampling run on the whole vector in
    the single-device order, so a sharded run draws the same ancestors as an
    unsharded one (a sum split across devices rounds differently, and one
    ancestor in some thousands would change)."""
    return shard_particles(log_weights, mesh, PartitionSpec())


class FilterState(NamedTuple):
    """N particles after ``time`` steps of the scan."""

    prefix_choices: Any  # (N, ...) each particle's latent choices before the scan
    carry: Any  # (N, ...) the scan's carry
    steps_log_density: jax.Array  # (N,) log p of each particle's steps so far
    log_weights: jax.Array  # (N,) normalised: logsumexp = 0
    log_marginal_likelihood: jax.Array  # () the estimate of log p(observations so far)
    xs: Any  # the scan's inputs (steps, ...), shared by the particles; None if none
    time: jax.Array  # () steps taken
    settings: FilterSettings


class FilterInfo(NamedTuple):
    """What one step did, for every particle (after resampling and moves)."""

    choices: Any  # (N, ...) the step's latent choices
    output: Any  # (N, ...) the step's output y
    log_weights: jax.Array  # (N,) normalised weights after the step
    ancestors: jax.Array  # (N,) int32: each particle's parent among the previous step's
    resampled: jax.Array  # () bool
    ess: jax.Array  # () effective sample size after weighting, before resampling
    acceptance_rate: jax.Array  # () mean acceptance of the rejuvenation moves (1 without)


def find_scan(model, args):
    """The model's one scan outside every vmap, scan and branch; an error
    that says what it found otherwise."""
    sites = scan_sites(model, args)
    if len(sites) != 1:
        found = [ppl.errors.format_address(s.path) for s in sites]
        raise ValueError(
            f"a particle filter advances one gf.scan(T) over time; the model {model!r} makes "
            f"{len(sites)} outside any vmap or branch{': ' + str(found) if found else ''}"
        )
    return sites[0]


def _latent(choices, observed):
    return from_paths({p: v for p, v in by_path(choices).items() if p not in observed}) if observed else choices


def filter_init(key, model, args, observations, num_particles, *, proposal=None, resample="systematic",
                ess_threshold=0.5, rejuvenate=None, devices=None):
    """``(FilterState, ess)`` after the model's prefix: ``num_particles``
    particles from ``model.generate`` with ``observations`` outside the scan
    (the step observations are given to ``filter_step``), resampled if their
    ESS is below ``ess_threshold * num_particles``. The other arguments are
    ``particle_filter``'s."""
    resampler(resample)  # a bad name fails here, before anything is traced
    observations = ppl.choicemap.to_arrays(observations or {})
    mesh = particle_mesh(devices, num_particles)
    return _filter_init(model, key, tuple(args), observations, num_particles, proposal, resample, float(ess_threshold),
                        rejuvenate, mesh)


@jit_gfi(constraints_arg=2)
def _filter_init(model, key, args, observations, num_particles, proposal, resample, ess_threshold, rejuvenate, mesh):
    site = find_scan(model, args)
    outside, _ = split_observations(observations, site.path)
    settings = FilterSettings(site.step, site.path, proposal, resample, ess_threshold, rejuvenate, site.length, mesh)
    init_key, resample_key = jax.random.split(key)

    def particle(k):
        run = run_prefix(k, model, args, outside, site.path)
        return _latent(run.choices, tuple(by_path(outside))), run.init_carry, run.log_weight, run.xs

    try:
        prefix, carry, log_weights, xs = ppl.vmap_particles(particle, num_particles, out_axes=(0, 0, 0, None))(init_key)
    except ValueError as error:
        if "out_axes" not in str(error):
            raise
        raise ValueError(f"the xs of the scan at {site.path} depend on random choices; a filter needs them fixed") from None
    prefix, carry = shard_particles((prefix, carry), mesh)
    log_weights, total = normalise(replicate_weights(log_weights, mesh))
    log_z = total - jnp.log(num_particles)
    zeros = jnp.zeros(num_particles, log_weights.dtype)
    state = FilterState(prefix, carry, zeros, log_weights, log_z, xs, jnp.zeros((), jnp.int32), settings)
    ess = effective_sample_size(log_weights)
    state, _, _, _ = _maybe_resample(resample_key, state, ess)
    return state, ess


def _maybe_resample(key, state, ess, step_trace=None):
    """Resample (state, step trace) when the ESS is below the threshold:
    ``(state, step_trace, ancestors, resampled)``."""
    settings = state.settings
    n = state.log_weights.shape[0]
    identity = jnp.arange(n, dtype=jnp.int32)
    if settings.ess_threshold <= 0.0:  # never: sequential importance sampling
        return state, step_trace, identity, jnp.bool_(False)
    moved = (state.prefix_choices, state.carry, state.steps_log_density, step_trace)

    def resample(_):
        ancestors = resampler(settings.resample)(key, state.log_weights).astype(jnp.int32)
        return ancestors, gather(moved, ancestors), uniform_log_weights(n, state.log_weights.dtype)

    if settings.ess_threshold >= 1.0:
        resampled = jnp.bool_(True)
        ancestors, moved, log_weights = resample(None)
    else:  # a cond, so a step that keeps its particles skips the search and the gathers
        resampled = ess < settings.ess_threshold * n
        ancestors, moved, log_weights = jax.lax.cond(
            resampled, resample, lambda _: (identity, moved, state.log_weights), None)
    prefix, carry, steps_log_density, step_trace = shard_particles(moved, settings.mesh)
    state = state._replace(prefix_choices=prefix, carry=carry, steps_log_density=steps_log_density, log_weights=log_weights)
    return state, step_trace, ancestors, resampled


def filter_step(key, state, observation, x=None):
    """``(FilterState, FilterInfo)`` after one step of the scan with this
    step's ``observation`` (a choice map of the step, e.g. ``{"y": y_t}``)
    and input ``x`` (by default the scan's own ``xs[time]``)."""
    settings = state.settings
    n = state.log_weights.shape[0]
    observation = ppl.choicemap.to_arrays(observation or {})
    if x is None and state.xs is not None:
        x = jax.tree.map(lambda v: v[state.time], state.xs)
    keys = jax.random.split(key, 2 if settings.rejuvenate is None else 3)
    move_key, resample_key, rejuvenate_key = keys[0], keys[1], keys[-1]

    def extend(k, carry):
        if settings.proposal is None:
            trace, log_weight = settings.step.generate(k, observation, (carry, x))
            return trace, log_weight
        proposal_key, step_key = jax.random.split(k)
        proposed = settings.proposal.simulate(proposal_key, (carry, x, observation))
        trace, log_weight = settings.step.generate(step_key, ppl.merge(proposed.choices, observation), (carry, x))
        return trace, log_weight - proposed.log_density

    trace, increments = shard_particles(ppl.vmap_particles(extend, n)(move_key, state.carry), settings.mesh)
    log_weights, total = normalise(replicate_weights(state.log_weights + increments, settings.mesh))
    state = state._replace(log_weights=log_weights, log_marginal_likelihood=state.log_marginal_likelihood + total)
    ess = 1.0 / jnp.sum(jnp.exp(2.0 * log_weights))  # Kish's ESS of normalised weights: no shift needed
    state, trace, ancestors, resampled = _maybe_resample(resample_key, state, ess, step_trace=trace)
    trace, acceptance = _rejuvenate(rejuvenate_key, settings.rejuvenate, trace, n)
    carry, output = trace.retval
    state = state._replace(carry=carry, steps_log_density=state.steps_log_density + trace.log_density, time=state.time + 1)
    info = FilterInfo(_latent(trace.choices, tuple(by_path(observation))), output, state.log_weights, ancestors, resampled, ess, acceptance)
    return state, info


def _rejuvenate(key, kernel, trace, n):
    """Move every particle's step with ``kernel`` (invariant for the step's
    conditional given its carry, so for the filtering distribution)."""
    if kernel is None:
        return trace, jnp.ones((), jnp.result_type(float))
    keys = jax.random.split(key, n)
    state, info = jax.vmap(lambda k, t: kernel.step(k, kernel.init(t)))(keys, trace)
    return state.trace, jnp.mean(info.acceptance_rate)
