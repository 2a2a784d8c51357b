"""``smc.particle_filter``: a particle filter over a model's scan, as one
compiled ``lax.scan`` of ``filter_step``, then each final particle's whole
trajectory traced back through its ancestors (Kitagawa 1996; Doucet and
Johansen 2009, "A tutorial on particle filtering and smoothing")."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import ppl
from ppl.jit import jit_gfi
from ppl.choicemap import by_path
from ppl.sequential import run_with_steps, split_observations
from ppl.inference.smc.filtering import filter_init, filter_step, particle_mesh

__all__ = ["ParticleFilterResult", "particle_filter", "trajectories"]


class ParticleFilterResult(NamedTuple):
    """A particle filter's output (a pytree: returned from ``jax.jit``, stacked by ``jax.vmap``).

    - ``log_marginal_likelihood``: log of an estimate of p(observations), unbiased in Z;
    - ``particles``: the final particles, a ``ppl.Trace`` of the model with a
      leading particle axis: each a whole trajectory (traced back through its
      ancestors), its log density and the model's return value;
    - ``log_weights``: their normalised log weights (logsumexp 0);
    - ``ess``: the effective sample size after the prefix and after each step's
      weighting (before resampling), shape (T + 1,);
    - ``ancestors``: (T, N) each step's parent indices (the identity where it did not resample);
    - ``resampled``: (T,) whether each step resampled;
    - ``filtered_choices`` / ``filtered_log_weights``: each step's latent choices and
      weights, (T, N, ...): the filtering distributions p(x_t | y_0..t);
    - ``acceptance_rate``: (T,) mean acceptance of the rejuvenation moves;
    - ``initial_choices`` / ``initial_log_weights``: the particles' latent
      choices before the scan and their weights, (N, ...), as step 0 found
      them (its ``ancestors`` index them): for backward smoothing.
    """

    log_marginal_likelihood: jax.Array
    particles: Any
    log_weights: jax.Array
    ess: jax.Array
    ancestors: jax.Array
    resampled: jax.Array
    filtered_choices: Any
    filtered_log_weights: jax.Array
    acceptance_rate: jax.Array
    initial_choices: Any
    initial_log_weights: jax.Array


def trajectories(step_values, ancestors):
    """Each final particle's values at every step, following its ancestors
    back: (N, T, ...) from per-step (T, N, ...) values and (T, N) ancestors.

    >>> values = jnp.array([[10, 11], [20, 21]])  # step 0, step 1
    >>> ancestors = jnp.array([[0, 1], [1, 1]])  # both step-1 particles descend from particle 1
    >>> trajectories(values, ancestors)
    Array([[11, 20],
           [11, 21]], dtype=int32)
    """

    def back(index, step):
        values, parents = step
        return parents[index], jax.tree.map(lambda v: v[index], values)

    n = ancestors.shape[1]
    _, traced = jax.lax.scan(back, jnp.arange(n, dtype=ancestors.dtype), (step_values, ancestors), reverse=True)
    return jax.tree.map(lambda v: jnp.moveaxis(v, 0, 1), traced)


def particle_filter(key, model, args, observations, num_particles, *, proposal=None, resample="systematic",
                    ess_threshold=0.5, rejuvenate=None, devices=None):
    """A particle filter for ``model``, which makes one ``gf.scan(T)`` over time.

    Arguments:
    - ``observations``: a choice map; the scan's observations sit under its
      address with a leading time axis, e.g. ``{"y0": y0, "steps": {"y": ys}}``.
    - ``num_particles``: N, a Python int.
    - ``proposal``: None (the bootstrap filter: each step's latents from the
      model) or a generative function ``proposal(carry, x, observation)`` whose
      choices are the step's latent choices; weights are then
      p(step) / q(proposal). The prefix always draws from the model.
    - ``resample``: "systematic" (default), "stratified", "residual" or "multinomial".
    - ``ess_threshold``: resample when ESS < ess_threshold * N; 1.0 resamples
      at every step, 0.0 never (sequential importance sampling).
    - ``rejuvenate``: None, or an MCMC kernel on traces of the scan's step (for
      example ``mcmc.mh(step, ["x"])``) applied to every particle after each step.
    - ``devices``: None, ``"all"`` or a list of devices to split the particles
      across (``jax.sharding``; N a multiple of their number); weights,
      resampling and log Z stay global, so the run equals the unsharded one.

    Returns a ``ParticleFilterResult``. Jittable and vmappable over keys. The
    key splits as ``init_key, steps_key = jax.random.split(key)``: ``init_key``
    goes to ``filter_init`` and step t uses ``jax.random.split(steps_key, T)[t]``,
    so ``filter_init`` / ``filter_step`` with those keys give the same run.

    >>> @ppl.gen
    ... def step(x, _):
    ...     x = ppl.sample("x", dist.Normal(0.9 * x, 1.0))
    ...     ppl.sample("y", dist.Normal(x, 0.5))
    ...     return x, None
    >>> @ppl.gen
    ... def ssm(T):
    ...     x0 = ppl.sample("x0", dist.Normal(0.0, 1.0))
    ...     return ppl.sample("steps", step.scan(T)(x0, None))
    >>> ys = jnp.array([0.3, 0.1, -0.4, 0.2])
    >>> result = smc.particle_filter(jax.random.key(0), ssm, (4,), {"steps": {"y": ys}}, 1000)
    >>> result.particles.choices["steps"]["x"].shape, result.ancestors.shape
    ((1000, 4), (4, 1000))
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive Python int, got {num_particles!r}")
    args = tuple(args)
    ppl.validation.check_finite_arguments(args)
    return _particle_filter(model, key, args, ppl.choicemap.to_arrays(observations or {}), num_particles,
                            proposal, resample, float(ess_threshold), rejuvenate, particle_mesh(devices, num_particles))


@jit_gfi(constraints_arg=2)  # compiled once per model, shapes and settings
def _particle_filter(model, key, args, observations, num_particles, proposal, resample, ess_threshold, rejuvenate, mesh):
    init_key, steps_key = jax.random.split(key)
    devices = None if mesh is None else list(mesh.devices.flat)
    state, first_ess = filter_init(init_key, model, args, observations, num_particles, proposal=proposal,
                                   resample=resample, ess_threshold=ess_threshold, rejuvenate=rejuvenate, devices=devices)
    path = state.settings.path
    _, inside = split_observations(observations, path)
    steps = state.settings.length
    _check_step_observations(inside, steps, path)

    constant = _constant_infos(state.settings, state.log_weights.dtype)

    def body(state, inputs):
        k, observation, x = inputs
        state, info = filter_step(k, state, observation, x)
        return state, info._replace(**{name: None for name in constant})  # not stored at every step

    keys = jax.random.split(steps_key, steps)
    initial = (state.prefix_choices, state.log_weights)
    state, infos = jax.lax.scan(body, state._replace(xs=None), (keys, inside, state.xs))
    infos = infos._replace(**{name: jnp.full((steps,), value) for name, value in constant.items()})
    outside, _ = split_observations(observations, path)
    particles = _final_traces(model, args, state, infos, outside, inside, num_particles)
    ess = jnp.concatenate([first_ess[None], infos.ess])
    return ParticleFilterResult(state.log_marginal_likelihood, particles, state.log_weights, ess, infos.ancestors,
                                infos.resampled, infos.choices, infos.log_weights, infos.acceptance_rate, *initial)


def _constant_infos(settings, dtype):
    """The per-step infos the settings fix: whether a step resampled (always
    or never) and, without moves, their acceptance rate (1)."""
    constant = {}
    if settings.ess_threshold >= 1.0 or settings.ess_threshold <= 0.0:
        constant["resampled"] = jnp.bool_(settings.ess_threshold >= 1.0)
    if settings.rejuvenate is None:
        constant["acceptance_rate"] = jnp.ones((), dtype)
    return constant


def _check_step_observations(inside, steps, path):
    for sub, value in by_path(inside).items():
        if jnp.ndim(value) == 0 or jnp.shape(value)[0] != steps:
            address = ppl.errors.format_address(path + sub)
            raise ValueError(
                f"observation {address!r} has shape {jnp.shape(value)}; the scan at "
                f"{ppl.errors.format_address(path)!r} makes {steps} steps, so it needs a leading axis of {steps}"
            )


def _final_traces(model, args, state, infos, outside, inside, n):
    """The model's traces of the final particles: their prefix choices, their
    traced-back steps (with the observations put back) and return values."""
    steps = trajectories(infos.choices, infos.ancestors)
    outputs = trajectories(infos.output, infos.ancestors)
    observed = jax.tree.map(lambda v: jnp.broadcast_to(v, (n,) + jnp.shape(v)), inside)
    steps = ppl.merge(steps, observed) if by_path(inside) else steps
    path = state.settings.path

    def replay(_, prefix, choices, total, carry, ys):
        prefix = ppl.merge(prefix, outside) if by_path(outside) else prefix
        return run_with_steps(model, args, prefix, path, choices, total, carry, ys)

    inputs = (state.prefix_choices, steps, state.steps_log_density, state.carry, outputs)
    traces = ppl.vmap_particles(replay, n)(None, *inputs)
    return ppl.Trace(traces.choices, traces.retval, args, traces.log_density)
