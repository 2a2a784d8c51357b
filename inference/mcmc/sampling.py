"""The program behind ``mcmc.nuts`` / ``hmc`` / ``mala``: warmup (Stan's
windowed adaptation) then sampling, for all chains. ``calls.py`` compiles it
once per model, argument shapes and settings, so a second call with a new
key, or new data of the same shapes, reuses it.

Randomness: chain c's key is ``split(key, num_chains)[c]`` and its t-th
transition (warmup included) uses ``fold_in(chain key, t)``, so a run
continued from ``result.state`` with the same key draws exactly what one
longer run draws.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import by_path, from_paths, merge
from ppl.inference.mcmc.adaptation import window_adaptation, window_schedule
from ppl.inference.mcmc.chains import run_sharded, scan_chains
from ppl.counter_rng import fold_in
from ppl.inference.mcmc.gibbs import gibbs
from ppl.inference.mcmc.hmc import HMCState, hmc_step, init
from ppl.inference.mcmc.initialise import initial_positions
from ppl.inference.mcmc.mala import mala_step
from ppl.inference.mcmc.nuts import nuts_step

__all__ = ["ChainState", "FreshStart", "Settings", "sample_chains", "start_positions", "constrained_draw", "STATS"]

# ArviZ's sample_stats names recorded per draw, by algorithm.
STATS = {
    "nuts": ("diverging", "acceptance_rate", "n_steps", "tree_depth", "step_size", "energy", "lp"),
    "hmc": ("diverging", "acceptance_rate", "n_steps", "step_size", "energy", "lp"),
    "mala": ("diverging", "acceptance_rate", "n_steps", "step_size", "lp"),
}


class ChainState(NamedTuple):
    """Everything a run needs to continue its chains (leading axis: chains):
    a pytree of arrays, so it can be saved and passed back as ``state=``."""

    kernel_state: HMCState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    iteration: jax.Array  # transitions made so far, warmup included
    discrete: dict  # the values of the choices moved by Gibbs ({} without ``gibbs``)


class Settings(NamedTuple):
    """The static choices of a run (hashable: part of the compilation key)."""

    algorithm: str
    num_warmup: int
    num_samples: int
    thinning: int
    chain_method: str
    adaptation: str
    dense_mass: bool
    target_accept: float
    max_tree_depth: int
    num_integration_steps: int
    gibbs: tuple = ()  # addresses (path tuples) updated by enumerative Gibbs before each transition


def _transition(settings, log_density_fn, key, state, step_size, inverse_mass_matrix):
    """One transition of the algorithm; returns the new state and its stats."""
    if settings.algorithm == "nuts":
        state, info = nuts_step(key, state, log_density_fn, step_size, inverse_mass_matrix, settings.max_tree_depth)
        stats = dict(n_steps=info.num_integration_steps, tree_depth=info.tree_depth, energy=info.energy)
    elif settings.algorithm == "hmc":
        state, info = hmc_step(key, state, log_density_fn, step_size, inverse_mass_matrix, settings.num_integration_steps)
        stats = dict(n_steps=info.num_integration_steps, energy=info.energy)
    else:
        state, info = mala_step(key, state, log_density_fn, step_size, inverse_mass_matrix)
        stats = dict(n_steps=jnp.ones((), jnp.int32))
    stats.update(diverging=info.is_divergent, acceptance_rate=info.acceptance_rate, step_size=step_size, lp=state.log_density)
    return state, stats


def _gibbs_sweep(settings, target, key, chain):
    """Enumerative Gibbs on each of ``settings.gibbs`` given the continuous
    latents: returns the new discrete values and the target conditioned on them."""
    trace = target.replace_observations(chain.discrete).trace(chain.kernel_state.position)
    for address, address_key in zip(settings.gibbs, jax.random.split(key, len(settings.gibbs))):
        kernel = gibbs(target.model, address)
        trace = kernel.step(address_key, kernel.init(trace))[0].trace
    flat = by_path(trace.choices)
    discrete = from_paths({path: flat[path] for path in settings.gibbs})
    return discrete, target.replace_observations(discrete)


def _move(settings, target, key, chain, step_size, inverse_mass_matrix):
    """Gibbs on the discrete choices (if any), then one transition of the
    gradient kernel on the continuous ones: the new chain, its stats, and the
    log density the transition used."""
    state = chain.kernel_state
    if settings.gibbs:
        key, gibbs_key = jax.random.split(key)
        discrete, target = _gibbs_sweep(settings, target, gibbs_key, chain)
        state = init(state.position, target.log_density)  # the target moved with the discrete choices
        chain = chain._replace(discrete=discrete)
    state, stats = _transition(settings, target.log_density, key, state, step_size, inverse_mass_matrix)
    return chain._replace(kernel_state=state, iteration=chain.iteration + 1), stats, target.log_density


def _warmup(settings, target, chain_keys, chains, bar_id):
    warmup = window_adaptation(settings.adaptation, settings.dense_mass, settings.target_accept, settings.num_warmup)

    def transition(carry, flags):
        chain_key, chain, adapt = carry
        step_key, search_key = jax.random.split(fold_in(chain_key, chain.iteration))
        log_density_fn = target.replace_observations(chain.discrete).log_density
        adapt = warmup.begin(search_key, adapt, flags, chain.kernel_state, log_density_fn)
        chain, stats, _ = _move(settings, target, step_key, chain, adapt.step_size, adapt.inverse_mass_matrix)
        adapt = warmup.update(adapt, flags, chain.kernel_state, stats["acceptance_rate"])
        return (chain_key, chain, adapt), (None, stats["diverging"])

    adapts = jax.vmap(lambda chain: warmup.init(chain.kernel_state, chain.step_size, chain.inverse_mass_matrix))(chains)
    flags = jnp.asarray(window_schedule(settings.num_warmup))
    (_, chains, adapts), _ = scan_chains(
        transition, (chain_keys, chains, adapts), settings.num_warmup, settings.chain_method, bar_id, 0, 0, flags
    )
    step_size, inverse_mass_matrix = jax.vmap(warmup.final)(adapts)
    return chains._replace(step_size=step_size, inverse_mass_matrix=inverse_mass_matrix)


def _sample(settings, target, chain_keys, chains, bar_id):
    def one_transition(carry, _):
        chain_key, chain = carry
        key = fold_in(chain_key, chain.iteration)
        chain, stats, _ = _move(settings, target, key, chain, chain.step_size, chain.inverse_mass_matrix)
        return (chain_key, chain), stats

    layout = {}  # name -> (shape, dtype) of each packed value, filled when the scan traces ``transition``

    def transition(carry, _):  # ``thinning`` transitions per kept draw
        if settings.thinning == 1:
            carry, kept = one_transition(carry, None)
        else:
            carry, stats = jax.lax.scan(one_transition, carry, None, settings.thinning)
            kept = jax.tree.map(lambda a: a[-1], stats)
            kept.update(diverging=jnp.any(stats["diverging"]), n_steps=jnp.sum(stats["n_steps"]))
        kept = {name: value for name, value in kept.items() if name not in _constant_names(settings)}
        kept["position"] = carry[1].kernel_state.position
        layout.update({name: (jnp.shape(value), jnp.result_type(value)) for name, value in kept.items()})
        return carry, ((_pack(kept, layout), carry[1].discrete), kept["diverging"])

    (_, chains), (outputs, _) = scan_chains(
        transition, (chain_keys, chains), settings.num_samples, settings.chain_method, bar_id, 1,
        settings.num_warmup,
    )
    rows, discrete = outputs
    stats = _unpack(rows, layout)
    return chains, (stats.pop("position"), discrete), stats


def _pack(values, layout):
    """A draw's position and stats (bools and integers below 2**24 exactly) as
    one vector in the position's dtype: one write per transition instead of
    one per stat (four fewer kernels per HMC transition on CPU)."""
    dtype = layout["position"][1]
    return jnp.concatenate([jnp.ravel(values[name]).astype(dtype) for name in layout])


def _unpack(rows, layout):
    """``_pack``'s values from its rows (leading axes kept), in their own shapes and dtypes."""
    values, offset = {}, 0
    for name, (shape, dtype) in layout.items():
        size = math.prod(shape)
        values[name] = rows[..., offset : offset + size].reshape(rows.shape[:-1] + shape).astype(dtype)
        offset += size
    return values


def constrained_draw(target, position, discrete):
    """The latent choices (the Gibbs ones, ``discrete``, included) and the
    return value of one draw."""
    choices, retval = target.replace_observations(discrete).constrain(position)
    return merge(choices, discrete), retval


def _all_chains(settings, target, chain_keys, chains, bar_id):
    if settings.num_warmup:
        chains = _warmup(settings, target, chain_keys, chains, bar_id)
    chains, (positions, discrete), stats = _sample(settings, target, chain_keys, chains, bar_id)
    # The return values are left out (XLA drops their computation): MCMCResult
    # computes them from the positions when they are first read.
    samples = jax.vmap(jax.vmap(lambda p, d: constrained_draw(target, p, d)[0]))(positions, discrete)
    return chains, (positions, discrete), samples, _constant_stats(settings, chains, stats)


def _constant_names(settings):
    """The stats that do not change while sampling: the step size, and the
    number of gradient steps per draw of HMC and MALA."""
    return ("step_size",) if settings.algorithm == "nuts" else ("step_size", "n_steps")


def _constant_stats(settings, chains, stats):
    """``stats`` with the constant ones (``_constant_names``) filled in: broadcast
    over draws after the loop rather than stored at every transition."""
    shape = (chains.step_size.shape[0], settings.num_samples)
    stats = dict(stats, step_size=jnp.broadcast_to(chains.step_size[:, None], shape))
    if settings.algorithm != "nuts":
        per_transition = settings.num_integration_steps if settings.algorithm == "hmc" else 1
        stats["n_steps"] = jnp.full(shape, per_transition * settings.thinning, jnp.int32)
    return {name: stats[name] for name in STATS[settings.algorithm]}


@functools.partial(jax.tree_util.register_dataclass, data_fields=["radius", "step_size", "discrete"], meta_fields=["num_chains"])
@dataclasses.dataclass(frozen=True)
class FreshStart:
    """What new chains start from, inside the compiled call: initial positions
    uniform on (-radius, radius) (retried where not finite), the first step
    size, and per chain the values of the Gibbs choices. Python numbers are
    fine for the first two (no transfer of ours per call)."""

    radius: jax.Array | float
    step_size: jax.Array | float
    discrete: dict
    num_chains: int  # static: part of the compilation key, as the chains' shapes are


def start_positions(target, key, fresh):
    """``(positions, valid)``: the initial positions of fresh chains (a run
    that found none valid calls it again, outside, to name the problem)."""
    return initial_positions(target, jax.random.fold_in(key, 1), fresh.radius, fresh.num_chains, fresh.discrete)


def _start(settings, target, key, fresh):
    """``(valid, ChainState)`` of fresh chains."""
    positions, valid = start_positions(target, key, fresh)
    states = jax.vmap(lambda p, d: init(p, target.replace_observations(d).log_density))(positions, fresh.discrete)
    dtype, n, num_chains = positions.dtype, target.dimension, fresh.num_chains
    metric = jnp.eye(n, dtype=dtype) if settings.dense_mass else jnp.ones(n, dtype)
    chains = ChainState(
        states,
        jnp.full((num_chains,), fresh.step_size, dtype),
        jnp.broadcast_to(metric, (num_chains,) + metric.shape),
        jnp.zeros((num_chains,), jnp.int32),
        fresh.discrete,
    )
    return valid, chains


def sample_chains(target, key, chains, bar_id, settings):
    """Warmup and sampling of every chain: ``(final ChainState, (positions,
    Gibbs choices), samples, stats, valid)``, leading axes (chains, draws).

    ``chains``: the ``ChainState`` of a run to continue, or a ``FreshStart``;
    then ``valid`` says per chain whether it found a valid start, and when
    some chain found none nothing is run (the outputs are zeros: the caller
    raises); None when continuing.
    """
    valid = None
    if isinstance(chains, FreshStart):
        valid, chains = _start(settings, target, key, chains)
    chain_keys = jax.random.split(jax.random.fold_in(key, 0), chains.iteration.shape[0])
    program = functools.partial(_all_chains, settings, target)
    if settings.chain_method == "sharded":
        run = lambda chains: run_sharded(lambda keys, chains: program(keys, chains, bar_id), chain_keys, chains)
    else:
        run = lambda chains: program(chain_keys, chains, bar_id)
    if valid is None:
        return (*run(chains), valid)
    skip = lambda chains: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(run, chains))
    return (*jax.lax.cond(jnp.all(valid), run, skip, chains), valid)
