"""nutpie's low-rank modified mass matrix (Seyboldt, Carlson and Carpenter
2026, "Preconditioning Hamiltonian Monte Carlo by minimizing Fisher
divergence", the low-rank plus diagonal estimator; nuts-rs
``src/transform/adapt/low_rank.rs``), estimated from the positions AND the
gradients of one adaptation window.

The inverse mass matrix is a diagonal scaling with a low-rank correction::

    M^{-1} = diag(s) (I + U (Lambda - I) U^T) diag(s),    s**2 = fisher_diagonal

1. Diagonal: ``s_i = (var x_i / var g_i)^{1/4}`` (population variances),
   so ``s**2`` is nutpie's Fisher diagonal ``sqrt(var x / var g)``.
2. Scale and centre: ``y = (x - mean x) / s``, ``h = (g - mean g) * s``.
3. Subspace: an orthonormal basis ``Q`` (d, p) of span(draws) + span(gradients)
   in the scaled space, ``p <= min(d, 2k)`` (nutpie: thin SVDs, then a QR of
   both sets of left vectors; a QR of both sets of columns spans the same).
4. In the subspace, ``A = Q^T S_y Q + eps I`` and ``B = Q^T S_h Q + eps I``
   (``S`` the population covariances, ``eps = gamma / k``: nutpie's
   ``Y Y^T / gamma + I``, divided through by ``k / gamma``; floored at 10
   ulps of the covariances' scale for float32's sake), and their SPD
   geometric mean ``C = B^{-1/2} (B^{1/2} A B^{1/2})^{1/2} B^{-1/2}``, the
   solution of ``C B C = A``: the minimiser of the regularised sample Fisher
   divergence ``tr(C B) + tr(C^{-1} A)`` (for a Gaussian ``N(0, S)``, whose
   gradients ``-S^{-1} x`` have covariance ``S^{-1}``, it is ``S``).
5. ``C = W diag(lambda) W^T``; eigenvalues in ``[1/cutoff, cutoff]`` become 1
   (left to the diagonal), the rest give ``U = Q W`` and ``Lambda``.

With k draws in a window the correction has rank at most ``min(d, 2(k-1))``
(the centred draws and gradients each span at most k - 1 directions).

Here the metric is used densely (``low_rank_inverse_mass_matrix`` returns a
(d, d) matrix) so the dense-metric HMC/NUTS code runs it unchanged: that
costs O(d^2) per leapfrog step, not the O(d r) a factored metric would
(``LowRankFactors`` holds the factors; a factored metric is future work).

Warmup needs the window's draws themselves, not running moments, so
``window_buffer_*`` keep them in a fixed-capacity buffer (jittable):
memory ``capacity * d * 2`` numbers.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "LowRankFactors",
    "fisher_diagonal",
    "low_rank_factors",
    "low_rank_inverse_mass_matrix",
    "dense_inverse_mass_matrix",
    "WindowBuffer",
    "window_buffer_init",
    "window_buffer_update",
    "window_buffer_estimate",
]

_CLIP = (1e-10, 1e10)  # bounds on the diagonal and the eigenvalues (float32-safe)


class LowRankFactors(NamedTuple):
    """``M^{-1} = diag(scale) (I + vectors (diag(values) - I) vectors^T) diag(scale)``.

    ``vectors`` (d, p) has orthonormal columns; ``values`` (p,) are 1 for the
    columns left out (inside the cutoff band, or beyond ``max_rank``), so the
    shapes stay static; ``rank`` counts the others.
    """

    scale: jax.Array  # (d,), the square root of the Fisher diagonal
    vectors: jax.Array  # (d, p)
    values: jax.Array  # (p,)
    rank: jax.Array  # (), int


def _rows(mask, k, dtype):
    if mask is None:
        return jnp.ones((k,), dtype)
    return jnp.asarray(mask).astype(dtype)


def _moments(values, weights, count):
    mean = weights @ values / count
    centred = (values - mean) * weights[:, None]
    return centred, jnp.sum(centred**2, axis=0) / count


def _scaled_window(positions, gradients, mask):
    """The diagonal ``s`` and the centred, scaled draws and gradients
    (rows left out by ``mask`` are zero); the count of rows used."""
    positions, gradients = jnp.asarray(positions), jnp.asarray(gradients)
    dtype = jnp.result_type(positions, gradients, float)
    positions, gradients = positions.astype(dtype), gradients.astype(dtype)
    finite = jnp.all(jnp.isfinite(positions), axis=1) & jnp.all(jnp.isfinite(gradients), axis=1)
    weights = _rows(mask, positions.shape[0], dtype) * finite
    positions = jnp.where(finite[:, None], positions, 0.0)
    gradients = jnp.where(finite[:, None], gradients, 0.0)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    draws, draw_variance = _moments(positions, weights, count)
    grads, grad_variance = _moments(gradients, weights, count)
    usable = (draw_variance > 0) & (grad_variance > 0) & jnp.isfinite(draw_variance) & jnp.isfinite(grad_variance)
    ratio = jnp.where(usable, draw_variance, 1.0) / jnp.where(usable, grad_variance, 1.0)
    diagonal = jnp.where(usable, jnp.clip(jnp.sqrt(ratio), *_CLIP), 1.0)
    scale = jnp.sqrt(diagonal)
    # a dimension left at 1 is left out of the low-rank part too (nutpie would keep its old metric)
    draws, grads = jnp.where(usable, draws / scale, 0.0), jnp.where(usable, grads * scale, 0.0)
    return scale, draws, grads, count


def fisher_diagonal(positions, gradients, *, mask=None):
    """nutpie's diagonal inverse mass matrix ``sqrt(var x / var g)`` from a
    window's draws and gradients of the log density, each (k, d).

    Exact for a Gaussian with a diagonal covariance, where ``var g_i =
    1 / var x_i``. Dimensions whose draws or gradients do not vary in the
    window (a stuck chain, fewer than two draws) fall back to 1 (the
    identity); the rest are clipped to [1e-10, 1e10]. ``mask`` (k,) bool
    leaves rows out.

    >>> x = jax.random.normal(jax.random.key(0), (1000, 2)) * jnp.array([3.0, 0.5])
    >>> g = -x / jnp.array([9.0, 0.25])
    >>> fisher_diagonal(x, g).round(4)
    Array([9.  , 0.25], dtype=float32)
    """
    scale, _, _, _ = _scaled_window(positions, gradients, mask)
    return scale**2


def _subspace(draws, grads):
    """An orthonormal basis (d, p) of the span of both sets of rows."""
    k, d = draws.shape
    if 2 * k >= d:
        return jnp.eye(d, dtype=draws.dtype)
    columns = jnp.concatenate([draws, grads], axis=0).T
    norms = jnp.linalg.norm(columns, axis=0)
    columns = columns / jnp.where(norms > 0, norms, 1.0)
    basis, _ = jnp.linalg.qr(columns)
    return basis


def _geometric_mean(draws, grads, regularisation):
    """``C`` with ``C B C = A`` for ``A = draws^T draws + r I`` and ``B = grads^T
    grads + r I`` (r = ``regularisation``): ``B^{-1/2} (B^{1/2} A B^{1/2})^{1/2}
    B^{-1/2}``. Both square roots come from singular values of the data, not
    from eigenvalues of ``A`` and ``B``, whose small ones float32 loses."""
    p = grads.shape[1]
    _, singular, right = jnp.linalg.svd(grads, full_matrices=True)
    values = jnp.zeros((p,), grads.dtype).at[: singular.shape[0]].set(singular) ** 2 + regularisation
    root = (right.T * jnp.sqrt(values)) @ right
    inverse_root = (right.T / jnp.sqrt(values)) @ right
    stacked = jnp.concatenate([draws @ root, jnp.sqrt(regularisation) * root], axis=0)  # stacked^T stacked = root A root
    _, singular, right = jnp.linalg.svd(stacked, full_matrices=False)
    mean = inverse_root @ ((right.T * singular) @ right) @ inverse_root
    return 0.5 * (mean + mean.T)


def low_rank_factors(positions, gradients, *, gamma=1e-5, cutoff=2.0, max_rank=None, mask=None):
    """The factors of nutpie's low-rank modified inverse mass matrix (see the
    module docstring for the algorithm) from a window's draws and gradients
    of the log density, each (k, d); ``mask`` (k,) bool leaves rows out, as
    are rows with a non-finite entry.

    ``gamma``: the regularisation, nutpie's ``mass_matrix_gamma``: in the
    subspace the covariances of the scaled draws and gradients get ``gamma /
    k`` added to their diagonals (at least 10 ulps of the larger one's
    largest entry, which only float32 ever needs). ``cutoff`` (> 1):
    eigenvalues in ``[1/cutoff, cutoff]`` are left to the diagonal (nutpie's
    ``eigval_cutoff``). ``max_rank`` (a Python int, static under ``jit``):
    keep at most this many eigenvalues, those furthest from 1 in ratio
    (None: all outside the band, as nutpie).

    A degenerate window (fewer than two draws, a stuck chain) gives the
    identity in the dimensions that do not vary, and no correction there.

    >>> x = jax.random.normal(jax.random.key(0), (200, 3)) * jnp.array([1.0, 1.0, 0.1])
    >>> x = x.at[:, 1].add(0.99 * x[:, 0])  # a correlated pair and an independent scale
    >>> factors = low_rank_factors(x, -x @ jnp.linalg.inv(jnp.cov(x.T)))
    >>> int(factors.rank)  # the pair's two directions; the diagonal takes the third
    2
    """
    if cutoff <= 1:
        raise ValueError(f"cutoff={cutoff!r}: it must be above 1 (eigenvalues in [1/cutoff, cutoff] are dropped)")
    if max_rank is not None and max_rank < 0:
        raise ValueError(f"max_rank={max_rank!r}: it must be None or a non-negative int")
    scale, draws, grads, count = _scaled_window(positions, gradients, mask)
    basis = _subspace(draws, grads)
    draws, grads = draws @ basis / jnp.sqrt(count), grads @ basis / jnp.sqrt(count)
    size = jnp.maximum(jnp.max(jnp.sum(draws**2, axis=0)), jnp.max(jnp.sum(grads**2, axis=0)))
    regularisation = jnp.maximum(gamma / count, 10 * jnp.finfo(draws.dtype).eps * size)
    regularisation = jnp.maximum(regularisation, jnp.finfo(draws.dtype).tiny)
    values, vectors = jnp.linalg.eigh(_geometric_mean(draws, grads, regularisation))
    values = jnp.clip(values, *_CLIP)
    distance = jnp.abs(jnp.log(values))
    keep = distance > jnp.log(cutoff)
    if max_rank is not None:
        order = jnp.argsort(-jnp.where(keep, distance, -1.0))
        position = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
        keep = keep & (position < max_rank)
    values = jnp.where(keep, values, 1.0)
    return LowRankFactors(scale, basis @ vectors, values, jnp.sum(keep))


def dense_inverse_mass_matrix(factors):
    """The (d, d) inverse mass matrix of ``LowRankFactors``.

    >>> factors = LowRankFactors(jnp.ones(2), jnp.eye(2), jnp.array([4.0, 1.0]), jnp.array(1))
    >>> dense_inverse_mass_matrix(factors)
    Array([[4., 0.],
           [0., 1.]], dtype=float32)
    """
    scale, vectors, values, _ = factors
    scaled = vectors * scale[:, None]
    matrix = jnp.diag(scale**2) + (scaled * (values - 1.0)) @ scaled.T
    return 0.5 * (matrix + matrix.T)


def low_rank_inverse_mass_matrix(positions, gradients, *, gamma=1e-5, cutoff=2.0, max_rank=None, mask=None):
    """nutpie's low-rank modified inverse mass matrix, dense (d, d), from a
    window's draws (k, d) and gradients of the log density (k, d).

    The arguments are ``low_rank_factors``'s. The matrix is SPD and finite
    for any window: a degenerate one (fewer than two draws, constant draws)
    falls back to the Fisher diagonal, and to the identity in dimensions
    that do not vary. Run densely it costs O(d^2) per leapfrog step (a
    factored metric, O(d r), is future work).

    >>> cov = jnp.array([[1.0, 0.95], [0.95, 1.0]])
    >>> x = jax.random.normal(jax.random.key(0), (500, 2)) @ jnp.linalg.cholesky(cov).T
    >>> estimate = low_rank_inverse_mass_matrix(x, -x @ jnp.linalg.inv(cov))
    >>> bool(jnp.allclose(estimate, cov, atol=0.15))
    True
    """
    factors = low_rank_factors(positions, gradients, gamma=gamma, cutoff=cutoff, max_rank=max_rank, mask=mask)
    return dense_inverse_mass_matrix(factors)


class WindowBuffer(NamedTuple):
    """The draws and gradients of an adaptation window, in a buffer of static
    capacity: rows ``[0, count)`` are filled (later ones are dropped)."""

    positions: jax.Array  # (capacity, d)
    gradients: jax.Array  # (capacity, d)
    count: jax.Array  # (), int32


def window_buffer_init(capacity, dimension, dtype=None):
    """An empty ``WindowBuffer``: memory ``capacity * dimension * 2`` numbers.

    >>> window_buffer_init(4, 3).positions.shape
    (4, 3)
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    zeros = jnp.zeros((capacity, dimension), dtype)
    return WindowBuffer(zeros, zeros, jnp.zeros((), jnp.int32))


def window_buffer_update(buffer, position, gradient, include=True):
    """Append one draw and its log-density gradient; ``include=False`` skips
    it (nutpie skips transitions that did not move), and so does a full
    buffer. Jittable and vmappable: ``include`` may be a traced bool.

    >>> buffer = window_buffer_update(window_buffer_init(4, 2), jnp.ones(2), -jnp.ones(2))
    >>> int(buffer.count), buffer.positions[0].tolist()
    (1, [1.0, 1.0])
    """
    capacity = buffer.positions.shape[0]
    include = jnp.asarray(include) & (buffer.count < capacity)
    row = jnp.minimum(buffer.count, capacity - 1)

    def put(rows, value):
        value = jnp.asarray(value, rows.dtype)
        return rows.at[row].set(jnp.where(include, value, rows[row]))

    count = buffer.count + include.astype(buffer.count.dtype)
    return WindowBuffer(put(buffer.positions, position), put(buffer.gradients, gradient), count)


def window_buffer_estimate(buffer, *, gamma=1e-5, cutoff=2.0, max_rank=None):
    """``low_rank_inverse_mass_matrix`` of the filled rows of the buffer (the
    others are masked out, so the capacity stays static under ``jit``).

    >>> buffer = window_buffer_init(8, 2)
    >>> for x in ([0.0, 1.0], [1.0, 0.0], [2.0, 2.0]):
    ...     buffer = window_buffer_update(buffer, jnp.array(x), -jnp.array(x))
    >>> window_buffer_estimate(buffer).shape
    (2, 2)
    """
    mask = jnp.arange(buffer.positions.shape[0]) < buffer.count
    return low_rank_inverse_mass_matrix(
        buffer.positions, buffer.gradients, gamma=gamma, cutoff=cutoff, max_rank=max_rank, mask=mask
    )
