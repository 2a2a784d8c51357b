"""Euclidean metrics: the kinetic energy of a momentum and how to draw one.

The metric is given by its inverse mass matrix, the (co)variance that the
momentum's kinetic energy ``r^T M^{-1} r / 2`` uses: a vector (diagonal) or a
matrix (dense). The identity metric is ``jnp.ones(n)``. Adaptation estimates
the inverse mass matrix as the posterior (co)variance (Stan; Neal 2011, 4.1).
"""

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = ["kinetic_energy", "velocity", "sample_momentum", "check_inverse_mass_matrix"]


def velocity(inverse_mass_matrix, momentum):
    """``M^{-1} r``, the time derivative of the position.

    >>> velocity(jnp.array([2.0, 0.5]), jnp.array([1.0, 1.0]))
    Array([2. , 0.5], dtype=float32)
    """
    if jnp.ndim(inverse_mass_matrix) == 1:
        return inverse_mass_matrix * momentum
    return inverse_mass_matrix @ momentum


def kinetic_energy(inverse_mass_matrix, momentum):
    """``r^T M^{-1} r / 2``.

    >>> kinetic_energy(jnp.ones(2), jnp.array([1.0, 2.0]))
    Array(2.5, dtype=float32)
    """
    return 0.5 * jnp.dot(momentum, velocity(inverse_mass_matrix, momentum))


def sample_momentum(key, inverse_mass_matrix, like):
    """A momentum ``r ~ N(0, M)`` shaped and typed like the position ``like``.

    With ``M^{-1} = L L^T`` (Cholesky), ``r = L^{-T} z`` has covariance
    ``L^{-T} L^{-1} = M``; a diagonal metric divides by ``sqrt(M^{-1})``.

    >>> sample_momentum(jax.random.key(0), jnp.ones(3), jnp.zeros(3)).shape
    (3,)
    """
    noise = jax.random.normal(key, jnp.shape(like), jnp.result_type(like))
    if jnp.ndim(inverse_mass_matrix) == 1:
        return noise / jnp.sqrt(inverse_mass_matrix)
    cholesky = jnp.linalg.cholesky(inverse_mass_matrix)
    return solve_triangular(cholesky.T, noise, lower=False)


def check_inverse_mass_matrix(inverse_mass_matrix, dimension):
    """Raise a ValueError unless the shape is ``(dimension,)`` or ``(dimension, dimension)``.

    >>> check_inverse_mass_matrix(jnp.ones(3), 3)
    """
    shape = tuple(jnp.shape(inverse_mass_matrix))
    if shape not in ((dimension,), (dimension, dimension)):
        raise ValueError(
            f"inverse_mass_matrix has shape {shape}; a position of dimension {dimension} needs "
            f"({dimension},) (diagonal) or ({dimension}, {dimension}) (dense)"
        )
