"""Backward simulation smoothing (FFBSi; Godsill, Doucet and West 2004,
"Monte Carlo smoothing for nonlinear time series"): trajectories drawn from
p(x_0..T | y_0..T) by going back through a particle filter's filtering
distributions. Each trajectory starts at a final particle (by weight) and
at every earlier step picks particle j with weight w_t^j p(x_{t+1}, y_{t+1}
| carry_t^j), so it is not tied to the filter's genealogy, whose early
steps have collapsed to a few ancestors. Cost O(M N T) for M trajectories.
"""

import jax
import jax.numpy as jnp

import ppl
from ppl.choicemap import by_path, from_paths
from ppl.jit import jit_gfi
from ppl.inference.smc.filtering import find_scan
from ppl.inference.smc.markov import scan_of
from ppl.sequential import run_prefix, split_observations

__all__ = ["backward_smoothing"]


def backward_smoothing(key, model, args, observations, result, num_trajectories):
    """``num_trajectories`` equally weighted draws of the smoothing distribution
    from ``result``, a ``smc.particle_filter`` run of ``model`` on
    ``observations``: a ``ppl.Trace`` of the model with a leading trajectory
    axis. Exact in the limit of many particles when each step's carry is a
    function of its own choices (a state-space model whose carry is the
    state: checked).

    >>> from tests.smc_models import linear_gaussian, lg_data
    >>> _, _, observations = lg_data(10)
    >>> filtered = smc.particle_filter(jax.random.key(0), linear_gaussian, (10,), observations, 200)
    >>> smoothed = smc.backward_smoothing(jax.random.key(1), linear_gaussian, (10,), observations, filtered, 50)
    >>> smoothed.choices["steps"]["x"].shape, smoothed.choices["x0"].shape
    ((50, 10), (50,))
    """
    if not isinstance(num_trajectories, int) or num_trajectories < 1:
        raise ValueError(f"num_trajectories must be a positive Python int, got {num_trajectories!r}")
    args = tuple(args)
    observations = ppl.choicemap.to_arrays(observations or {})
    scan_of(model, args, observations, "backward_smoothing", "Use the filter's own trajectories (result.particles) instead")
    return _backward_smoothing(model, key, args, observations, result, num_trajectories)


@jit_gfi(constraints_arg=2)
def _backward_smoothing(model, key, args, observations, result, m):
    site = find_scan(model, args)
    path, step_gf = site.path, site.step
    outside, inside = split_observations(observations, path)
    prefix_run = lambda c: run_prefix(jax.random.key(0), model, args, ppl.merge(c, outside) if by_path(outside) else c, path)
    initial_carries = jax.vmap(lambda c: prefix_run(c).init_carry)(result.initial_choices)
    xs = prefix_run(jax.tree.map(lambda v: v[0], result.initial_choices)).xs
    given = lambda choices, t: _with(choices, jax.tree.map(lambda v: v[t], inside))

    # carry_t^j: by the Markov condition, a function of particle j's step-t choices alone
    any_carry = jax.tree.map(lambda c: c[0], initial_carries)

    def carries_at(choices, t):
        x = None if xs is None else jax.tree.map(lambda v: v[t], xs)
        return jax.vmap(lambda c: step_gf.generate(jax.random.key(0), given(c, t), (any_carry, x))[0].retval[0])(choices)

    times = jnp.arange(site.length)
    carries = jax.vmap(carries_at)(result.filtered_choices, times)  # (T, N, ...)

    def pick(k, log_weights, candidate_carries, chosen_next, t_next):
        """For each trajectory, a particle of step t given its step t + 1."""
        x = None if xs is None else jax.tree.map(lambda v: v[t_next], xs)
        joint = jax.vmap(lambda nxt: jax.vmap(lambda c: step_gf.assess(given(nxt, t_next), (c, x))[0])(candidate_carries))(chosen_next)
        return jax.random.categorical(k, log_weights[None, :] + joint, axis=1)

    keys = jax.random.split(key, site.length + 1)
    last = site.length - 1
    take = lambda tree, t, index: jax.tree.map(lambda v: v[t][index], tree)
    index = jax.random.categorical(keys[last], result.filtered_log_weights[last], shape=(m,))
    chosen = take(result.filtered_choices, last, index)

    def back(chosen_next, t):
        index = pick(keys[t], result.filtered_log_weights[t], jax.tree.map(lambda v: v[t], carries), chosen_next, t + 1)
        chosen = take(result.filtered_choices, t, index)
        return chosen, chosen

    first, earlier = jax.lax.scan(back, chosen, times[:-1], reverse=True)
    steps = jax.tree.map(lambda e, l: jnp.concatenate([jnp.moveaxis(e, 0, 1), l[:, None]], axis=1), earlier, chosen)
    index = pick(keys[-1], result.initial_log_weights, initial_carries, first, 0)
    before = {p: v[index] for p, v in by_path(result.initial_choices).items() if p[: len(path)] != path}
    prefix = from_paths(before) if before else {}

    def trace(prefix, steps):
        scan_choices = _with(steps, inside)
        nested = from_paths({path + p: v for p, v in by_path(scan_choices).items()})
        return model.generate(jax.random.key(0), ppl.merge(prefix, outside, nested), args)[0]

    return jax.vmap(trace)(prefix, steps)


def _with(choices, observed):
    return ppl.merge(choices, observed) if by_path(observed) else choices
