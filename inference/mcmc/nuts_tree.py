"""The NUTS trajectory in Stan's form (Betancourt 2017, appendix A), built
iteratively: a ``lax.while_loop`` over doublings around one over leapfrog
steps, with O(max_tree_depth) memory.

Doubling j (j = 0, 1, ...) adds 2^j states at the end chosen by a fair coin.
Within a doubling the new states are sampled progressively in proportion to
``exp(-H)`` (multinomial sampling); a finished doubling's sample replaces
the trajectory's with probability ``min(1, W_new / W_old)`` (the biased
progressive sampling that favours the new states). Building stops at a
divergence (energy error above ``DIVERGENCE_THRESHOLD``, or NaN) or a U-turn
inside the new doubling (``nuts_uturn``; both discard the doubling), at a
U-turn of the merged trajectory, or after ``max_tree_depth`` doublings.

Stan's extra checks across the seam of two merged subtrees are not done (see
``nuts_uturn``): they would be free here, at the merge of a doubling, but
must then be done on every subtree inside a doubling too, or the stopping
rule depends on where in the trajectory the chain started and detailed
balance fails (done at the merge alone they biased the variance of a
3-D Gaussian by 7%). Everything is in log density (weights ``H0 -
H``) and in the position's dtype.

What made it cheap, measured on eight schools (where the gradient costs
0.1 µs and the bookkeeping is the step): random draws from a fused
counter-based hash (``counter_rng``), one per step; ends and per-doubling
draws picked by selects, not by indexing with per-chain values (a gather,
a loop over chains under vmap on CPU); the kinetic energy computed once
per state. A single flat loop over steps, with the doubling's bookkeeping
masked into every step, was slower alone and much slower under vmap.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.counter_rng import key_words, threefry_2x32, uniform
from ppl.inference.mcmc.hmc import DIVERGENCE_THRESHOLD, HMCState
from ppl.inference.mcmc.integrators import IntegratorState, leapfrog
from ppl.inference.mcmc.metrics import velocity
from ppl.inference.mcmc.nuts_uturn import empty_checkpoints, no_u_turn, record_and_check

__all__ = ["Trajectory", "build_trajectory"]


class Trajectory(NamedTuple):
    sample: HMCState  # the state drawn from the trajectory
    energy: jax.Array  # its Hamiltonian
    sum_acceptance: jax.Array  # sum over the new states of min(1, exp(H0 - H))
    num_steps: jax.Array  # leapfrog steps
    depth: jax.Array  # doublings made (a discarded last one included)
    is_divergent: jax.Array
    is_turning: jax.Array


class _Ends(NamedTuple):
    """The trajectory's two ends stacked: row 0 the earliest in time, row 1 the latest."""

    position: jax.Array
    momentum: jax.Array
    log_density_grad: jax.Array
    velocity: jax.Array


class _Draw(NamedTuple):
    """A sampled state, its Hamiltonian, and the log of the summed weights it was drawn from."""

    state: HMCState
    energy: jax.Array
    log_weight: jax.Array


class _Trajectory(NamedTuple):  # the outer loop's carry
    depth: jax.Array
    steps: jax.Array
    ends: _Ends
    draw: _Draw
    momentum_sum: jax.Array
    checkpoints: object
    sum_acceptance: jax.Array
    is_divergent: jax.Array
    is_turning: jax.Array


class _Doubling(NamedTuple):  # the inner loop's carry: only what changes every step
    n: jax.Array  # steps made in this doubling
    leaf: IntegratorState  # its latest state
    leaf_velocity: jax.Array
    draw: _Draw
    momentum_sum: jax.Array
    checkpoints: object
    sum_acceptance: jax.Array
    is_divergent: jax.Array
    is_turning: jax.Array


def _select(when, new, old):
    return jax.tree.map(lambda a, b: jnp.where(when, a, b), new, old)


def _end(rows, forward):
    return jnp.where(forward, rows[1], rows[0])


def _pick(values, index):
    return jnp.sum(jnp.where(jnp.arange(values.shape[0]) == index, values, 0))


def _leapfrog_step(d, t, constants):
    """One step of the doubling ``d`` of trajectory ``t``: the new state, its
    weight, the doubling's multinomial draw, sums and checks."""
    log_density_fn, step_size, inverse_mass_matrix, start_energy, words = constants
    first = d.n == 0
    leaf = leapfrog(log_density_fn, step_size, inverse_mass_matrix, d.leaf)
    leaf_velocity = velocity(inverse_mass_matrix, leaf.momentum)
    energy = -leaf.log_density + 0.5 * jnp.dot(leaf.momentum, leaf_velocity)
    log_weight = start_energy - energy  # log of exp(-H) / exp(-H0)
    log_weight = jnp.where(jnp.isnan(log_weight), -jnp.inf, log_weight)
    # keep the new state with probability its weight over the doubling's so far
    log_weight_sum = jnp.where(first, log_weight, jnp.logaddexp(d.draw.log_weight, log_weight))
    u = uniform(threefry_2x32(words, jnp.uint32(1), (t.steps + d.n).astype(jnp.uint32)), start_energy.dtype)
    take = first | (u < jnp.exp(log_weight - log_weight_sum))
    state = HMCState(leaf.position, leaf.log_density, leaf.log_density_grad)
    draw = _Draw(_select(take, state, d.draw.state), jnp.where(take, energy, d.draw.energy), log_weight_sum)
    sum_before = jnp.where(first, jnp.zeros_like(leaf.momentum), d.momentum_sum)
    momentum_sum = sum_before + leaf.momentum
    checkpoints, is_turning = record_and_check(d.checkpoints, d.n, leaf_velocity, leaf.momentum, momentum_sum)
    return _Doubling(
        d.n + 1, leaf, leaf_velocity, draw, momentum_sum, checkpoints,
        d.sum_acceptance + jnp.exp(jnp.minimum(log_weight, 0.0)),
        -log_weight > DIVERGENCE_THRESHOLD, is_turning,
    )


def _double(t, forward, coin, constants):
    """Trajectory ``t`` after one more doubling in direction ``forward``."""
    log_density_fn, step_size, inverse_mass_matrix, start_energy, words = constants
    far_velocity = _end(t.ends.velocity, ~forward)
    near = (_end(t.ends.position, forward), _end(t.ends.momentum, forward), _end(t.ends.log_density_grad, forward))
    start = IntegratorState(near[0], near[1], jnp.zeros_like(start_energy), near[2])
    false = jnp.zeros((), bool)
    d = _Doubling(jnp.zeros((), int), start, far_velocity, t.draw, jnp.zeros_like(near[1]), t.checkpoints,
                  t.sum_acceptance, false, false)
    signed = (log_density_fn, jnp.where(forward, step_size, -step_size), inverse_mass_matrix, start_energy, words)
    size = jnp.left_shift(1, t.depth)
    d = jax.lax.while_loop(lambda d: (d.n < size) & ~d.is_divergent & ~d.is_turning,
                           lambda d: _leapfrog_step(d, t, signed), d)
    valid = ~(d.is_divergent | d.is_turning)
    take = valid & (coin < jnp.exp(d.draw.log_weight - t.draw.log_weight))  # biased progressive sampling
    draw = _Draw(
        _select(take, d.draw.state, t.draw.state),
        jnp.where(take, d.draw.energy, t.draw.energy),
        jnp.where(valid, jnp.logaddexp(t.draw.log_weight, d.draw.log_weight), t.draw.log_weight),
    )
    total = t.momentum_sum + d.momentum_sum
    far_momentum = _end(t.ends.momentum, ~forward)
    keeps_going = no_u_turn(far_velocity, d.leaf_velocity, total - 0.5 * (far_momentum + d.leaf.momentum))
    row = ((jnp.arange(2) == forward) & valid)[:, None]
    new_end = (d.leaf.position, d.leaf.momentum, d.leaf.log_density_grad, d.leaf_velocity)
    return _Trajectory(
        t.depth + 1, t.steps + d.n, _Ends(*(jnp.where(row, b, a) for a, b in zip(t.ends, new_end))), draw,
        jnp.where(valid, total, t.momentum_sum), d.checkpoints, d.sum_acceptance,
        d.is_divergent, d.is_turning | valid & ~keeps_going,
    )


def build_trajectory(key, state, momentum, log_density_fn, step_size, inverse_mass_matrix, max_tree_depth):
    """The NUTS trajectory from ``state`` (an ``HMCState`` on a vector) with ``momentum``.

    >>> from ppl.inference.mcmc.hmc import init
    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2)
    >>> t = build_trajectory(jax.random.key(0), init(jnp.ones(2), log_density_fn), jnp.ones(2),
    ...                      log_density_fn, 0.3, jnp.ones(2), 10)
    >>> int(t.num_steps) <= 2 ** int(t.depth) - 1, bool(t.is_turning)  # a Gaussian orbit U-turns
    (True, True)
    """
    if max_tree_depth < 1:
        raise ValueError(f"max_tree_depth={max_tree_depth}: need at least one doubling")
    dtype = jnp.result_type(state.position)
    # one JAX draw keys the counter-based hash: counters (0, j) give the coin
    # that accepts doubling j, (2, j) its direction, (1, step) the draw inside it
    words = key_words(key)
    doubling = jnp.arange(max_tree_depth, dtype=jnp.uint32)
    coins = uniform(threefry_2x32(words, jnp.uint32(0), doubling), dtype)
    forwards = threefry_2x32(words, jnp.uint32(2), doubling)[0] >> 31  # 1: forward
    start_velocity = velocity(inverse_mass_matrix, momentum)
    start_energy = -state.log_density + 0.5 * jnp.dot(momentum, start_velocity)
    constants = (log_density_fn, jnp.asarray(step_size, dtype), inverse_mass_matrix, start_energy, words)
    false = jnp.zeros((), bool)
    t = _Trajectory(
        jnp.zeros((), int), jnp.zeros((), int),
        _Ends(*(jnp.stack([a, a]) for a in (state.position, momentum, state.log_density_grad, start_velocity))),
        _Draw(state, start_energy, jnp.zeros((), dtype)), momentum, empty_checkpoints(max_tree_depth, momentum),
        jnp.zeros((), dtype), false, false,
    )
    t = jax.lax.while_loop(
        lambda t: (t.depth < max_tree_depth) & ~t.is_divergent & ~t.is_turning,
        lambda t: _double(t, _pick(forwards, t.depth) > 0, _pick(coins, t.depth), constants),
        t,
    )
    return Trajectory(t.draw.state, t.draw.energy, t.sum_acceptance, t.steps, t.depth, t.is_divergent, t.is_turning)
