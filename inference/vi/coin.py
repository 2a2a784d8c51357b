"""Coin SVGD: Stein variational gradient descent without a learning rate
(Sharrock and Nemeth, 2023, "Coin sampling: gradient-based Bayesian
inference without learning rates", ICML).

Each coordinate of each particle is a gambler betting on the sign of its
Stein force c_t (the SVGD direction ``stein_force``; Orabona and Pal's
coin-betting view of online learning). The position *is* the bet, a
fraction of the gambler's wealth placed from the starting point x_0:

    L_t = max(L_{t-1}, |c_t|)                       the largest force seen
    G_t = G_{t-1} + |c_t|,  S_t = S_{t-1} + c_t     sums of |c| and c
    R_t = max(R_{t-1} + c_t (x_t - x_0), 0)         the reward won so far
    x_{t+1} = x_0 + S_t / (L_t (G_t + L_t)) (L_t + R_t)

A force that keeps its sign makes S_t / (G_t + L_t) near +-1 and the wealth
L_t + R_t grow, so the particle moves ever further; a force that flips sign
cancels in S_t, and the particle settles. This is the adaptive,
per-coordinate form the paper's experiments and code run (its L_t and
clipped reward follow Orabona and Tommasi's COCOB, 2017), with the starting
wealth L_t so that the first step is half a unit along the force's sign.
Nothing here needs a step size; the moves are in the units of the position,
so targets whose scale is far from 1 take more steps.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ppl.inference.vi.stein import ParticleKernel, SVGDInfo, _check_particles, _evaluate, _mean_norm, rbf_kernel, stein_force

__all__ = ["CoinSVGDState", "coin_svgd_kernel"]


class CoinSVGDState(NamedTuple):
    positions: jax.Array  # (N, n): x_t
    log_densities: jax.Array  # (N,), at positions
    gradients: jax.Array  # (N, n), at positions
    initial_positions: jax.Array  # (N, n): x_0, where every bet starts
    force_sum: jax.Array  # (N, n): S, the sum of the forces so far
    absolute_force_sum: jax.Array  # (N, n): G, the sum of their absolute values
    max_absolute_force: jax.Array  # (N, n): L, the largest absolute force so far (0 before the first step)
    reward: jax.Array  # (N, n): R, the clipped reward


def _coin_step(state, force):
    """The coin-betting recursion: the next positions and betting sums, given
    the Stein force at ``state.positions``."""
    absolute = jnp.abs(force)
    bound = jnp.maximum(state.max_absolute_force, absolute)
    absolute_sum = state.absolute_force_sum + absolute
    force_sum = state.force_sum + force
    reward = jnp.maximum(state.reward + force * (state.positions - state.initial_positions), 0.0)
    # S / (G + L) lies in [-1, 1]; (L + R) / L is the wealth in units of L.
    # Written so, no product L (G + L) underflows in float32. A coordinate whose
    # force has been exactly 0 so far (L = 0) has bet nothing and stays at x_0.
    seen = bound > 0
    safe_bound = jnp.where(seen, bound, 1.0)
    bet = force_sum / (absolute_sum + safe_bound) * (safe_bound + reward) / safe_bound
    positions = state.initial_positions + jnp.where(seen, bet, 0.0)
    return positions, state._replace(
        force_sum=force_sum, absolute_force_sum=absolute_sum, max_absolute_force=bound, reward=reward
    )


def coin_svgd_kernel(log_density_fn, kernel=None):
    """Coin SVGD on ``log_density_fn`` (R^n -> R): SVGD's Stein force with
    ``kernel`` (default ``rbf_kernel()``, median-heuristic bandwidth) and the
    coin-betting update in place of a learning rate (see the module
    docstring). One gradient per particle per step. The positions passed to
    ``init`` are where every bet starts: the run's particles stay within
    reach of them, about as far as the wealth grows.

    >>> kernel = vi.coin_svgd_kernel(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2))
    >>> state = kernel.init(jax.random.normal(jax.random.key(0), (50, 1)))
    >>> step = jax.jit(kernel.step)
    >>> for _ in range(500):
    ...     state, info = step(state)
    >>> bool(abs(state.positions.mean() - 3.0) < 0.1 and abs(state.positions.std() - 1.0) < 0.2)
    True
    """
    kernel = rbf_kernel() if kernel is None else kernel

    def init(positions):
        positions = jnp.asarray(positions, jnp.result_type(positions, float))
        _check_particles(positions, "coin_svgd_kernel")
        log_densities, gradients = _evaluate(log_density_fn, positions)
        zeros = jnp.zeros_like(positions)
        return CoinSVGDState(positions, log_densities, gradients, positions, zeros, zeros, zeros, zeros)

    def step(state):
        force, bandwidth = stein_force(kernel, state.positions, state.gradients)
        positions, state = _coin_step(state, force)
        log_densities, gradients = _evaluate(log_density_fn, positions)
        info = SVGDInfo(_mean_norm(force), _mean_norm(positions - state.positions), bandwidth)
        return state._replace(positions=positions, log_densities=log_densities, gradients=gradients), info

    return ParticleKernel(init, step)
