"""nutpie's low-rank modified mass matrix (inference/mcmc/low_rank.py).

The reference: for a Gaussian N(mu, Sigma) with exact draws and exact
gradients -Sigma^{-1}(x - mu), the scaled gradients are -S^{-1} times the
scaled draws (S = Sigma / outer(s, s), s the window's diagonal), so the
regularised Fisher minimiser is S itself once the draws span R^d (k > d):
then the estimate must equal, to the regularisation, the independent
reference diag(s) (I + W (L - I) W^T) diag(s) from numpy's eigendecomposition
of S with its eigenvalues in [1/cutoff, cutoff] dropped. Deterministic given
the draws, so the tolerances are numerical, not Monte Carlo.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference.mcmc import low_rank
from ppl.inference.mcmc.low_rank import (
    LowRankFactors,
    dense_inverse_mass_matrix,
    window_buffer_estimate,
    window_buffer_init,
    window_buffer_update,
)

CUTOFF = 2.0
# jitted: one compilation per shape instead of one per operation (the suite runs on 2 cores)
SETTINGS = ("gamma", "cutoff", "max_rank")
low_rank_factors = jax.jit(low_rank.low_rank_factors, static_argnames=SETTINGS)
low_rank_inverse_mass_matrix = jax.jit(low_rank.low_rank_inverse_mass_matrix, static_argnames=SETTINGS)
fisher_diagonal = jax.jit(low_rank.fisher_diagonal)


def random_covariance(dimension, seed, spread=3.0):
    """A dense covariance with log-eigenvalues in [-spread, spread] and mixed scales."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dimension, dimension)))
    covariance = (rotation * np.exp(rng.uniform(-spread, spread, dimension))) @ rotation.T
    scales = np.exp(rng.uniform(-2.0, 2.0, dimension))
    return covariance * np.outer(scales, scales)


def correlated_covariance(dimension, rho, seed):
    """Equicorrelation rho with scales over e^{+-3}: Stan's diagonal leaves the
    condition number (1 + (d - 1) rho) / (1 - rho)."""
    scales = np.exp(np.random.default_rng(seed).uniform(-3.0, 3.0, dimension))
    correlation = np.full((dimension, dimension), rho) + (1.0 - rho) * np.eye(dimension)
    return correlation * np.outer(scales, scales)


def gaussian_window(covariance, num_draws, seed):
    """Exact draws from N(mu, Sigma) (mu != 0, to catch centring errors) and
    their exact gradients -Sigma^{-1} (x - mu)."""
    rng = np.random.default_rng(seed)
    dimension = covariance.shape[0]
    mean = rng.normal(size=dimension) * np.sqrt(np.diag(covariance)) * 3.0
    draws = rng.multivariate_normal(mean, covariance, size=num_draws)
    gradients = -np.linalg.solve(covariance, (draws - mean).T).T
    return draws, gradients


def whitened_condition(inverse_mass_matrix, covariance):
    """The condition number of L^{-1} Sigma L^{-T}, with L L^T the inverse mass
    matrix (a vector: diagonal): 1 for a perfect metric."""
    inverse_mass_matrix = np.asarray(inverse_mass_matrix, np.float64)
    if inverse_mass_matrix.ndim == 1:
        inverse_mass_matrix = np.diag(inverse_mass_matrix)
    cholesky = np.linalg.cholesky(inverse_mass_matrix)
    whitened = np.linalg.solve(cholesky, np.linalg.solve(cholesky, covariance).T)
    values = np.linalg.eigvalsh(0.5 * (whitened + whitened.T))
    return values.max() / values.min()


def reference(covariance, scale, cutoff=CUTOFF):
    """diag(s) (I + W (L - I) W^T) diag(s) from the eigenvalues L of
    S = Sigma / outer(s, s) outside [1/cutoff, cutoff]; also all of L."""
    scaled = covariance / np.outer(scale, scale)
    values, vectors = np.linalg.eigh(scaled)
    outside = np.abs(np.log(values)) > np.log(cutoff)
    kept = vectors[:, outside]
    inner = np.eye(len(scale)) + (kept * (values[outside] - 1.0)) @ kept.T
    return inner * np.outer(scale, scale), values


def stan_diagonal(draws):
    """Stan's regularised window variance."""
    n = draws.shape[0]
    return n / (n + 5.0) * np.var(draws, axis=0, ddof=1) + 1e-3 * 5.0 / (n + 5.0)


def assert_spd(matrix):
    matrix = np.asarray(matrix, np.float64)
    assert np.all(np.isfinite(matrix))
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-6 * np.abs(matrix).max())
    assert np.linalg.eigvalsh(matrix).min() > 0


@pytest.mark.parametrize("dimension, num_draws", [(8, 50), (20, 200)])
def test_matches_the_gaussian_reference_when_the_draws_span_the_space(dimension, num_draws):
    covariance = random_covariance(dimension, seed=dimension)
    draws, gradients = gaussian_window(covariance, num_draws, seed=1)
    with jax.enable_x64(True):
        # gamma ~ 0: the exact minimiser (the default's gamma / k shifts an eigenvalue L by ~ L gamma / k)
        factors = low_rank_factors(jnp.asarray(draws), jnp.asarray(gradients), gamma=1e-12, cutoff=CUTOFF)
        estimate = np.asarray(dense_inverse_mass_matrix(factors))
        assert estimate.dtype == np.float64
        default = low_rank_inverse_mass_matrix(jnp.asarray(draws), jnp.asarray(gradients), cutoff=CUTOFF)
    scale = np.asarray(factors.scale)
    expected, values = reference(covariance, scale)
    # the setup is not at the band's edge, where rounding could flip an eigenvalue in or out
    assert np.min(np.abs(np.abs(np.log(values)) - np.log(CUTOFF))) > 0.02
    outside = np.abs(np.log(values)) > np.log(CUTOFF)
    assert 0 < int(factors.rank) == outside.sum() < dimension  # eigenvalues on both sides of the band
    kept = np.sort(np.asarray(factors.values)[np.asarray(factors.values) != 1.0])
    np.testing.assert_allclose(kept, np.sort(values[outside]), rtol=1e-6)
    np.testing.assert_allclose(estimate, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    # whitened by the estimate, only the eigenvalues inside the band remain
    assert whitened_condition(estimate, covariance) <= CUTOFF**2 * (1 + 1e-6)
    np.testing.assert_allclose(default, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_the_estimate_approaches_sigma_as_the_window_grows():
    # k <= d: the draws and gradients span at most 2(k - 1) directions; past k > d, exact
    dimension = 30
    covariance = correlated_covariance(dimension, rho=0.95, seed=2)
    draws, gradients = gaussian_window(covariance, 200, seed=3)
    conditions = []
    for num_draws in (5, 15, 60, 200):
        with jax.enable_x64(True):
            factors = low_rank_factors(jnp.asarray(draws[:num_draws]), jnp.asarray(gradients[:num_draws]))
            estimate = dense_inverse_mass_matrix(factors)
        assert int(factors.rank) <= min(dimension, 2 * (num_draws - 1))
        conditions.append(whitened_condition(estimate, covariance))
    diagonal_only = whitened_condition(np.asarray(fisher_diagonal(draws[:5], gradients[:5]), np.float64), covariance)
    assert conditions[0] < diagonal_only  # even five draws help
    assert conditions[-1] <= CUTOFF**2 * (1 + 1e-6)
    assert conditions[-1] < conditions[1] < conditions[0]


def test_a_diagonal_covariance_gives_the_fisher_diagonal():
    # for a diagonal Sigma, var x / var g = Sigma_ii^2 in every sample: the scaled target is I
    variances = np.exp(np.linspace(-4.0, 4.0, 12))
    draws, gradients = gaussian_window(np.diag(variances), 100, seed=4)
    with jax.enable_x64(True):
        factors = low_rank_factors(jnp.asarray(draws), jnp.asarray(gradients))
        estimate = np.asarray(low_rank_inverse_mass_matrix(jnp.asarray(draws), jnp.asarray(gradients)))
        diagonal = np.asarray(fisher_diagonal(jnp.asarray(draws), jnp.asarray(gradients)))
    assert int(factors.rank) == 0
    np.testing.assert_allclose(diagonal, variances, rtol=1e-10)
    np.testing.assert_allclose(estimate, np.diag(diagonal), rtol=0, atol=1e-10 * variances.max())


def test_float32_agrees_with_float64():
    covariance = correlated_covariance(20, rho=0.999, seed=5)
    draws, gradients = gaussian_window(covariance, 25, seed=6)  # k ~ d: nearly singular subspace covariances
    estimate = low_rank_inverse_mass_matrix(jnp.asarray(draws, jnp.float32), jnp.asarray(gradients, jnp.float32))
    assert estimate.dtype == jnp.float32
    assert_spd(estimate)
    with jax.enable_x64(True):
        exact = low_rank_inverse_mass_matrix(jnp.asarray(draws), jnp.asarray(gradients))
    assert whitened_condition(exact, covariance) < 1.01
    assert whitened_condition(estimate, covariance) < 1.5  # float32 keeps the 1000-fold correlation fixed


def test_more_dimensions_than_draws():
    dimension, num_draws = 200, 12
    covariance = correlated_covariance(dimension, rho=0.9, seed=7)
    draws, gradients = gaussian_window(covariance, num_draws, seed=8)
    factors = low_rank_factors(jnp.asarray(draws, jnp.float32), jnp.asarray(gradients, jnp.float32))
    estimate = dense_inverse_mass_matrix(factors)
    assert estimate.shape == (dimension, dimension) and factors.vectors.shape == (dimension, 2 * num_draws)
    assert 0 < int(factors.rank) <= 2 * (num_draws - 1)
    assert_spd(estimate)
    columns = np.asarray(factors.vectors, np.float64)
    np.testing.assert_allclose(columns.T @ columns, np.eye(2 * num_draws), atol=1e-4)
    # 12 draws in 200 dimensions: the correction acts in their 22-dimensional span, on top of a
    # diagonal that is itself noisy; it must still improve on either diagonal alone
    condition = whitened_condition(estimate, covariance)
    assert condition < whitened_condition(np.asarray(fisher_diagonal(draws, gradients)), covariance)
    assert condition < whitened_condition(stan_diagonal(draws), covariance)


def test_conditions_a_correlated_gaussian_far_better_than_stans_diagonal():
    dimension = 50
    covariance = correlated_covariance(dimension, rho=0.99, seed=9)
    population = (1 + (dimension - 1) * 0.99) / (1 - 0.99)  # ~5000: what a perfect diagonal leaves
    draws, gradients = gaussian_window(covariance, 100, seed=10)  # Stan's second slow window has 100 draws
    estimate = low_rank_inverse_mass_matrix(jnp.asarray(draws, jnp.float32), jnp.asarray(gradients, jnp.float32))
    assert whitened_condition(stan_diagonal(draws), covariance) > population / 2
    assert whitened_condition(estimate, covariance) < CUTOFF**2


def test_max_rank_keeps_the_eigenvalues_furthest_from_one():
    covariance = random_covariance(10, seed=11, spread=4.0)
    draws, gradients = gaussian_window(covariance, 100, seed=12)
    full = low_rank_factors(draws, gradients)
    capped = low_rank_factors(draws, gradients, max_rank=3)
    assert int(full.rank) > 3 and int(capped.rank) == 3
    furthest = np.sort(np.abs(np.log(np.asarray(full.values))))[-3:]
    np.testing.assert_allclose(np.sort(np.abs(np.log(np.asarray(capped.values))))[-3:], furthest, rtol=1e-5)
    assert int(low_rank_factors(draws, gradients, max_rank=0).rank) == 0
    with pytest.raises(ValueError, match="cutoff"):
        low_rank.low_rank_factors(draws, gradients, cutoff=1.0)


@pytest.mark.parametrize(
    "case",
    ["constant draws", "one draw", "zeros", "constant gradients", "non-finite", "some constant dimensions"],
)
def test_a_degenerate_window_gives_a_finite_spd_matrix(case):
    key_draws, key_grads = jax.random.split(jax.random.key(13))
    noise = jax.random.normal(key_draws, (20, 6))
    draws, gradients = {
        "constant draws": (jnp.full((20, 6), 3.0), jnp.full((20, 6), -1.0)),
        "one draw": (noise[:1], -noise[:1]),
        "zeros": (jnp.zeros((20, 6)), jnp.zeros((20, 6))),
        "constant gradients": (noise, jnp.ones((20, 6))),  # a flat direction: no curvature seen
        "non-finite": (noise.at[3, 2].set(jnp.nan), (-noise).at[5, 0].set(jnp.inf)),
        "some constant dimensions": (noise.at[:, :2].set(1.0), (-noise * 4.0).at[:, :2].set(0.5)),
    }[case]
    estimate = low_rank_inverse_mass_matrix(draws, gradients)
    assert_spd(estimate)
    if case in ("constant draws", "one draw", "zeros", "constant gradients"):
        np.testing.assert_array_equal(np.asarray(estimate), np.eye(6))  # nothing learnt: the identity
    if case == "non-finite":  # those rows are left out
        keep = np.ones(20, bool)
        keep[[3, 5]] = False
        expected = low_rank_inverse_mass_matrix(noise[keep], -noise[keep])
        np.testing.assert_allclose(estimate, expected, rtol=1e-5, atol=1e-6)
    if case == "some constant dimensions":  # the identity there, untouched by the correction
        np.testing.assert_array_equal(np.asarray(estimate[:2]), np.eye(6)[:2])
        np.testing.assert_allclose(np.diag(estimate)[2:], 0.25, rtol=1e-5)  # g = -4 x: variance 1/4


def test_the_buffer_estimates_from_its_filled_rows_under_jit():
    covariance = correlated_covariance(5, rho=0.9, seed=14)
    draws, gradients = gaussian_window(covariance, 30, seed=15)
    draws, gradients = jnp.asarray(draws, jnp.float32), jnp.asarray(gradients, jnp.float32)
    buffer = window_buffer_init(40, 5, jnp.float32)
    assert buffer.positions.shape == buffer.gradients.shape == (40, 5)

    update = jax.jit(window_buffer_update)
    skipped = jnp.arange(30) % 7 == 3  # e.g. transitions that did not move
    for t in range(30):
        buffer = update(buffer, draws[t], gradients[t], ~skipped[t])
    assert update._cache_size() == 1
    assert int(buffer.count) == 30 - int(skipped.sum())

    estimate = jax.jit(window_buffer_estimate)
    expected = low_rank_inverse_mass_matrix(draws[~skipped], gradients[~skipped])
    np.testing.assert_allclose(estimate(buffer), expected, rtol=1e-4, atol=1e-5)
    refilled = window_buffer_update(window_buffer_init(40, 5, jnp.float32), draws[0], gradients[0])
    estimate(refilled)
    assert estimate._cache_size() == 1  # new contents, same capacity: no retrace
    np.testing.assert_array_equal(estimate(window_buffer_init(40, 5, jnp.float32)), np.eye(5))


def test_a_full_buffer_drops_later_draws_and_vmaps_over_chains():
    buffer = window_buffer_init(3, 2)
    for t in range(5):
        buffer = window_buffer_update(buffer, jnp.full(2, float(t)), -jnp.full(2, float(t)))
    assert int(buffer.count) == 3
    np.testing.assert_array_equal(np.asarray(buffer.positions[:, 0]), [0.0, 1.0, 2.0])

    chains = jax.vmap(lambda _: window_buffer_init(8, 3))(jnp.arange(4))
    positions = jax.random.normal(jax.random.key(16), (4, 3))
    chains = jax.vmap(window_buffer_update)(chains, positions, -positions)
    assert chains.positions.shape == (4, 8, 3) and chains.count.tolist() == [1, 1, 1, 1]
    assert jax.vmap(window_buffer_estimate)(chains).shape == (4, 3, 3)


def test_dense_inverse_mass_matrix_of_factors():
    rotation = np.linalg.qr(np.random.default_rng(17).normal(size=(3, 3)))[0]
    factors = LowRankFactors(jnp.array([1.0, 2.0, 0.5]), jnp.asarray(rotation[:, :2], jnp.float32),
                             jnp.array([4.0, 0.25]), jnp.array(2))
    inner = np.eye(3) + (rotation[:, :2] * np.array([3.0, -0.75])) @ rotation[:, :2].T
    expected = inner * np.outer([1.0, 2.0, 0.5], [1.0, 2.0, 0.5])
    np.testing.assert_allclose(dense_inverse_mass_matrix(factors), expected, rtol=1e-5, atol=1e-6)
