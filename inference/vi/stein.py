"""Stein variational gradient descent (Liu and Wang, 2016) on a log density of R^n.

N particles x_1..x_N move along the Stein force, the direction in the unit
ball of a kernel's RKHS that decreases KL(particles || target) fastest:

    phi(x_i) = 1/N sum_j [ k(x_j, x_i) grad log p(x_j) + grad_{x_j} k(x_j, x_i) ]

The first term pulls particles up the log density, smoothed by the kernel;
the second pushes them apart, so they spread over the target rather than
collapse onto its mode. The kernel enters only through ``KernelTerms``: its
Gram matrix and the summed gradients of the second term, both N x N work.

``svgd_kernel`` steps ``x <- x + update(phi)`` with an optax optimiser
(``optax.sgd(learning_rate)`` is Liu and Wang's plain update); ``coin.py``
holds the coin-betting variant, which needs no learning rate.
"""

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "KernelTerms",
    "RBFKernel",
    "rbf_kernel",
    "pairwise_kernel",
    "median_bandwidth",
    "stein_force",
    "kernel_stein_discrepancy",
    "ParticleKernel",
    "SVGDState",
    "SVGDInfo",
    "svgd_kernel",
]


class KernelTerms(NamedTuple):
    """What the Stein force needs of a kernel at the particles ``x`` (N, n):
    ``gram[i, j] = k(x_j, x_i)`` (N, N), ``repulsion[i] = sum_j grad_{x_j}
    k(x_j, x_i)`` (N, n), and the ``bandwidth`` used (a scalar, NaN where the
    kernel has none)."""

    gram: jax.Array
    repulsion: jax.Array
    bandwidth: jax.Array


def _centred_squared_distances(positions):
    # Distances do not change under translation; centring first keeps the
    # |a|^2 + |b|^2 - 2 a.b form from cancelling away nearby particles far
    # from the origin (float32). Clipped: rounding can leave tiny negatives.
    centred = positions - jnp.mean(positions, axis=0)
    norms = jnp.sum(centred**2, axis=1)
    squared = norms[:, None] + norms[None, :] - 2.0 * centred @ centred.T
    return centred, jnp.maximum(squared, 0.0)


def _order_statistic(values, k):
    """The k-th smallest (from 0) of non-negative floats, exactly: bisection on
    their bit patterns, which non-negative floats order as integers do. One
    count per bit instead of a sort (XLA's CPU sort of the 2e4 pairs of 200
    particles takes ~5 ms, the step's largest cost; this, ~0.2 ms)."""
    width = 8 * values.dtype.itemsize
    bits = jax.lax.bitcast_convert_type(values, jnp.dtype(f"int{width}"))

    def halve(_, bracket):  # invariant: count(bits <= low) <= k < count(bits <= high)
        low, high = bracket
        middle = low + (high - low) // 2
        enough = jnp.sum(bits <= middle) > k
        return jnp.where(enough, low, middle), jnp.where(enough, middle, high)

    start = (jnp.full((), -1, bits.dtype), jnp.max(bits))
    _, high = jax.lax.fori_loop(0, width, halve, start)
    return jax.lax.bitcast_convert_type(high, values.dtype)


def median_bandwidth(positions):
    """Liu and Wang's heuristic h = med^2 / log N (med: the median distance
    between distinct particles), so that each particle's kernel weights sum to
    about 1 + N exp(-med^2 / h) = 2: its own gradient and the rest weigh alike.
    Where all particles coincide (med = 0), h = 1.

    >>> x = jnp.array([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4: median 4
    >>> round(float(vi.median_bandwidth(x)), 4)  # 4 / log 3
    3.641
    """
    return _median_bandwidth(_centred_squared_distances(positions)[1])


def _median_bandwidth(squared_distances):
    num_particles = squared_distances.shape[0]
    rows, columns = np.triu_indices(num_particles, k=1)
    pairs = squared_distances[rows, columns]
    middle = (_order_statistic(pairs, (pairs.shape[0] - 1) // 2) + _order_statistic(pairs, pairs.shape[0] // 2)) / 2
    bandwidth = middle / math.log(num_particles)
    return jnp.where(bandwidth > 0, bandwidth, jnp.ones_like(bandwidth))


@dataclasses.dataclass(frozen=True)
class RBFKernel:
    """k(x, y) = exp(-|x - y|^2 / h): ``bandwidth`` h, or None for the median
    heuristic at every step (``median_bandwidth``). Hashable by value, so a
    new ``rbf_kernel()`` does not recompile a run.

    >>> terms = rbf_kernel(bandwidth=2.0)(jnp.array([[0.0], [1.0]]))
    >>> round(float(terms.gram[0, 1]), 4), terms.repulsion.tolist()  # exp(-1/2); -+2/2 exp(-1/2)
    (0.6065, [[-0.6065...], [0.6065...]])
    """

    bandwidth: Optional[float] = None  # a frozen dataclass: hashable by value, and jax.jit(kernel) works

    def __call__(self, positions):
        centred, squared = _centred_squared_distances(positions)
        if self.bandwidth is None:
            bandwidth = jax.lax.stop_gradient(_median_bandwidth(squared))
        else:
            bandwidth = jnp.asarray(self.bandwidth, positions.dtype)
        gram = jnp.exp(-squared / bandwidth)
        # grad_{x_j} exp(-|x_j - x_i|^2 / h) = 2 (x_i - x_j) / h k_ij, summed over j.
        repulsion = (2.0 / bandwidth) * (centred * jnp.sum(gram, axis=1, keepdims=True) - gram @ centred)
        return KernelTerms(gram, repulsion, bandwidth)


def rbf_kernel(bandwidth=None):
    """The RBF kernel exp(-|x - y|^2 / bandwidth) (``RBFKernel``); None: the
    median heuristic, recomputed from the particles at every step.

    >>> rbf_kernel().bandwidth is None
    True
    """
    if bandwidth is not None and not float(bandwidth) > 0:
        raise ValueError(f"rbf_kernel: bandwidth={bandwidth!r}: need a positive number (or None for the median heuristic)")
    return RBFKernel(None if bandwidth is None else float(bandwidth))


@dataclasses.dataclass(frozen=True)
class PairwiseKernel:
    """See ``pairwise_kernel``."""

    kernel_fn: Callable

    def __call__(self, positions):
        on_pairs = jax.vmap(jax.vmap(self.kernel_fn, (0, None)), (None, 0))  # [i, j] = k(x_j, x_i)
        gram = on_pairs(positions, positions)
        grad_first = jax.vmap(jax.vmap(jax.grad(self.kernel_fn), (0, None)), (None, 0))(positions, positions)
        return KernelTerms(gram, jnp.sum(grad_first, axis=1), jnp.full((), jnp.nan, positions.dtype))


def pairwise_kernel(kernel_fn):
    """A kernel for the Stein force from any ``kernel_fn(x, y) -> scalar`` on
    two positions of R^n, its gradient by autodiff (N^2 kernel gradients per
    step; ``rbf_kernel`` has closed forms). Pass a module-level function, not a
    new lambda per call, so runs are not recompiled.

    >>> inverse_multiquadric = lambda x, y: 1.0 / jnp.sqrt(1.0 + jnp.sum((x - y) ** 2))
    >>> terms = pairwise_kernel(inverse_multiquadric)(jnp.array([[0.0], [1.0]]))
    >>> round(float(terms.gram[0, 1]), 4)
    0.7071
    """
    return PairwiseKernel(kernel_fn)


def stein_force(kernel, positions, gradients):
    """``(phi, bandwidth)``: the Stein force at each particle (N, n), from the
    particles ``positions`` (N, n) and their log density gradients (N, n).

    >>> x = jnp.array([[-1.0], [1.0]])  # N(0, 1): grad log p(x) = -x
    >>> phi, _ = stein_force(rbf_kernel(1.0), x, -x)
    >>> phi.tolist()  # pulled in, 0.5 (1 - e^-4), and pushed out, 2 e^-4
    [[0.4542...], [-0.4542...]]
    """
    terms = kernel(positions)
    force = (terms.gram @ gradients + terms.repulsion) / positions.shape[0]
    return force, terms.bandwidth


def kernel_stein_discrepancy(positions, gradients, bandwidth):
    """The kernelised Stein discrepancy of the particles to the target (the
    V-statistic, Liu, Lee and Jordan 2016), with the RBF kernel of a fixed
    ``bandwidth``: zero only when the particles match the target, in the
    limit. Compare runs at one bandwidth (a median-heuristic one differs
    between particle sets).

    >>> x = jnp.linspace(-2.0, 2.0, 9)[:, None]
    >>> bool(kernel_stein_discrepancy(x, -x, 1.0) < kernel_stein_discrepancy(x + 1.0, -(x + 1.0), 1.0))
    True
    """
    centred, squared = _centred_squared_distances(positions)
    gram = jnp.exp(-squared / bandwidth)
    dimension = positions.shape[1]
    # u(x, y) = k [s_x.s_y + (2/h)(x - y).(s_x - s_y) + 2n/h - 4|x - y|^2/h^2] for k = exp(-|x - y|^2 / h).
    cross = gradients @ gradients.T
    projected = jnp.sum(centred * gradients, axis=1)
    mixed = projected[:, None] + projected[None, :] - centred @ gradients.T - gradients @ centred.T
    stein = gram * (cross + (2.0 / bandwidth) * mixed + 2.0 * dimension / bandwidth - 4.0 * squared / bandwidth**2)
    return jnp.sqrt(jnp.maximum(jnp.mean(stein), 0.0))


class ParticleKernel(NamedTuple):
    """``init(positions (N, n)) -> state`` and ``step(state) -> (state, info)``:
    pure, jittable, deterministic."""

    init: Callable
    step: Callable


class SVGDState(NamedTuple):
    positions: jax.Array  # (N, n)
    log_densities: jax.Array  # (N,), at positions
    gradients: jax.Array  # (N, n), at positions
    optimizer_state: Any


class SVGDInfo(NamedTuple):
    force_norm: jax.Array  # the mean over particles of |phi(x_i)|
    update_norm: jax.Array  # the mean over particles of |x_i' - x_i|
    bandwidth: jax.Array


def _evaluate(log_density_fn, positions):
    """``(log densities (N,), gradients (N, n))`` of every particle."""
    return jax.vmap(jax.value_and_grad(log_density_fn))(positions)


def _check_particles(positions, who):
    if jnp.ndim(positions) != 2 or jnp.shape(positions)[0] < 2:
        raise ValueError(
            f"{who}: positions must have shape (num_particles, dimension) with num_particles >= 2 "
            f"(the kernel's repulsion acts between particles), got {jnp.shape(positions)}"
        )


def _mean_norm(vectors):
    return jnp.mean(jnp.sqrt(jnp.sum(vectors**2, axis=1)))


def _as_optimizer(optimizer, who="svgd_kernel"):
    """An optax transformation, or a learning rate for ``optax.sgd``."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if isinstance(optimizer, jax.Array) or not isinstance(optimizer, bool) and isinstance(optimizer, (int, float, np.number)):
        if not isinstance(optimizer, jax.core.Tracer) and not float(optimizer) > 0:
            raise ValueError(f"{who}: learning rate {optimizer!r}: need a positive number")
        return optax.sgd(optimizer)
    raise TypeError(f"{who}: optimizer must be an optax GradientTransformation or a positive learning rate, got {optimizer!r}")


def svgd_kernel(log_density_fn, optimizer, kernel=None):
    """SVGD on ``log_density_fn`` (R^n -> R, e.g. ``target.log_density`` of
    ``ppl.transforms.unconstrain``): each step moves the particles by
    ``optimizer`` (optax, or a learning rate for ``optax.sgd``: Liu and Wang's
    x <- x + rate phi(x)) along the Stein force with ``kernel`` (default
    ``rbf_kernel()``, median-heuristic bandwidth). One gradient per particle
    per step; the state keeps the gradients at its positions.

    >>> kernel = vi.svgd_kernel(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2), 0.5)
    >>> state = kernel.init(jax.random.normal(jax.random.key(0), (50, 1)))
    >>> step = jax.jit(kernel.step)
    >>> for _ in range(200):
    ...     state, info = step(state)
    >>> bool(abs(state.positions.mean() - 3.0) < 0.1 and abs(state.positions.std() - 1.0) < 0.2)
    True
    """
    optimizer = _as_optimizer(optimizer)
    kernel = rbf_kernel() if kernel is None else kernel

    def init(positions):
        positions = jnp.asarray(positions, jnp.result_type(positions, float))
        _check_particles(positions, "svgd_kernel")
        log_densities, gradients = _evaluate(log_density_fn, positions)
        return SVGDState(positions, log_densities, gradients, optimizer.init(positions))

    def step(state):
        force, bandwidth = stein_force(kernel, state.positions, state.gradients)
        # optax minimises: the descent direction of -KL is -phi.
        updates, optimizer_state = optimizer.update(-force, state.optimizer_state, state.positions)
        positions = optax.apply_updates(state.positions, updates)
        log_densities, gradients = _evaluate(log_density_fn, positions)
        info = SVGDInfo(_mean_norm(force), _mean_norm(positions - state.positions), bandwidth)
        return SVGDState(positions, log_densities, gradients, optimizer_state), info

    return ParticleKernel(init, step)
