"""The no-U-turn criterion on every subtree of a NUTS doubling, checked one
leapfrog step at a time with O(max_tree_depth) memory (the scheme of
NumPyro's and BlackJAX's iterative builders; Phan et al. 2019).

A doubling of 2^j states (numbered 0, 1, ... in integration order) is a
perfect binary tree. State ``n`` completes one subtree of size 2^k for each
k = 1 .. t, t the number of trailing one bits of ``n``, and each must pass
the generalised criterion (Betancourt 2013) over its own states. What that
needs of a subtree's first state (its velocity, and the momenta summed
before it plus half its own) is kept in a slot: an even ``n`` opens subtrees and is written to
slot ``popcount(n >> 1)``; at ``n`` the completed subtrees of sizes 2, 4,
..., 2^t have their first states in slots ``popcount(n >> 1)`` down to
``popcount(n >> 1) - t + 1``.

Stan (since 2.26) also checks each subtree's left half extended by the first
state of its right half and the other way round. Not done here (as in
NumPyro and BlackJAX): they need two more slots per level and cost about 15%
of a leapfrog step on eight schools, and they cannot be done only where
they are free (at the merge of a doubling): the checks must be the same on
every subtree, however it was built, or the sampler is biased.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Checkpoints", "no_u_turn", "empty_checkpoints", "record_and_check"]


def no_u_turn(velocity_minus, velocity_plus, momentum_sum):
    """The generalised criterion (Betancourt 2013): a trajectory with end
    velocities ``M^{-1} p`` and summed momenta ``rho`` keeps expanding while
    both ends move along ``rho``. False on NaN (a NaN trajectory stops).

    The sum given is NumPyro's and BlackJAX's, the end momenta counted half
    (the trapezoidal rule for the integral of the momentum over time): with
    Stan's plain sum and without Stan's extra checks (see above) trajectories
    on an isotropic Gaussian ran four times longer, past whole orbits.

    >>> bool(no_u_turn(jnp.array([1.0]), jnp.array([0.5]), jnp.array([2.0])))
    True
    >>> bool(no_u_turn(jnp.array([1.0]), jnp.array([-0.5]), jnp.array([2.0])))
    False
    """
    return (jnp.sum(velocity_minus * momentum_sum, -1) > 0) & (jnp.sum(velocity_plus * momentum_sum, -1) > 0)


class Checkpoints(NamedTuple):
    """Per slot (row) the first state of an open subtree; the last row is
    scratch, written by steps that open none (so every write is one
    unconditional row update: no select over all rows, no branch)."""

    velocity: jax.Array  # its velocity
    sum_to_half: jax.Array  # the momenta of the doubling's states before it, plus half its own


def empty_checkpoints(num_slots, like):
    """``num_slots`` zero slots (plus scratch) for momenta shaped and typed like the vector ``like``.

    >>> empty_checkpoints(3, jnp.zeros(2)).velocity.shape
    (4, 2)
    """
    rows = jnp.zeros((num_slots + 1,) + jnp.shape(like), jnp.result_type(like))
    return Checkpoints(rows, rows)


def _slots(n):
    """(highest, lowest) slot of the subtrees completed at step ``n``; none
    (lowest = highest + 1) when ``n`` is even."""
    highest = jax.lax.population_count(n >> 1)
    trailing_ones = jax.lax.population_count(n ^ (n + 1)) - 1
    return highest, highest - trailing_ones + 1


def _row(rows, i):
    return jax.lax.dynamic_index_in_dim(rows, i, keepdims=False)


def record_and_check(checkpoints, n, velocity, momentum, sum_through):
    """Step ``n`` of the doubling, its state with ``velocity`` and
    ``momentum``, the doubling's momenta summed through it: the checkpoints
    after it, and whether a subtree it completes turns (checked from the
    largest down, stopping at the first that does).

    >>> c = empty_checkpoints(2, jnp.zeros(1))
    >>> c, turning = record_and_check(c, 0, jnp.ones(1), jnp.ones(1), jnp.ones(1))
    >>> c, turning = record_and_check(c, 1, -jnp.ones(1), -jnp.ones(1), jnp.zeros(1))
    >>> bool(turning)  # states 0 and 1 move apart
    True
    """
    highest, lowest = _slots(n)
    scratch = checkpoints.velocity.shape[0] - 1
    slot = jnp.where(n % 2 == 0, highest, scratch)
    # written before the check reads: an odd n writes only the scratch row,
    # an even n checks nothing, and XLA updates the rows in place (reading the
    # old rows after an in-place write made it copy them every step)
    to_half = sum_through - 0.5 * momentum
    c = Checkpoints(*(jax.lax.dynamic_update_index_in_dim(rows, row, slot, 0)
                      for rows, row in zip(checkpoints, (velocity, to_half))))

    def check(carry):
        i, _ = carry
        return i - 1, ~no_u_turn(_row(c.velocity, i), velocity, to_half - _row(c.sum_to_half, i))

    _, turning = jax.lax.while_loop(lambda carry: (carry[0] >= lowest) & ~carry[1], check, (highest, jnp.zeros((), bool)))
    return c, turning
