"""SVGD and coin SVGD (``vi.svgd_kernel``, ``vi.coin_svgd_kernel``, ``vi.svgd``,
``vi.coin_svgd``): the kernel terms, Stein force, kernelised Stein discrepancy
and coin-betting recursion against independent NumPy / autodiff references;
the moments of a correlated Gaussian posterior; both modes of a bimodal target.

Tolerances. SVGD's particles are deterministic functions of their start and
interact, so there is no standard error of their own. The moment tests compare
with what N exact iid draws would give: an error within 3 of their standard
errors (sigma_d / sqrt(N) for a mean, sqrt((S_dd S_ee + S_de^2) / N) for a
covariance entry). SVGD at finite N is known to shrink the variance (the
repulsion is too weak to spread N particles as far as N draws; Ba et al.
2021): on these targets it sits about 0.4 of a standard error low. Dropping
the repulsive term of the Stein force (a planted bug) collapses the particles
to the mode: the covariance entries fall 5 to 10 standard errors low and the
tests fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl
from ppl import dist
from ppl.errors import DiscreteLatentError
from ppl.inference import vi
from ppl.inference.vi.particles_vi import _compiled

# ----- independent references (NumPy, explicit sums over pairs) --------------------


def reference_stein_force(x, gradients, bandwidth):
    """phi(x_i) = 1/N sum_j [k(x_j, x_i) s_j + grad_{x_j} k(x_j, x_i)], k = exp(-|x - y|^2 / h), by loops."""
    x, gradients = np.asarray(x, np.float64), np.asarray(gradients, np.float64)
    n = x.shape[0]
    force = np.zeros_like(x)
    for i in range(n):
        for j in range(n):
            k = np.exp(-np.sum((x[j] - x[i]) ** 2) / bandwidth)
            force[i] += k * gradients[j] - 2.0 * (x[j] - x[i]) / bandwidth * k
    return force / n


def reference_median_bandwidth(x):
    x = np.asarray(x, np.float64)
    squared = [np.sum((x[i] - x[j]) ** 2) for i in range(len(x)) for j in range(i + 1, len(x))]
    return np.median(squared) / np.log(len(x))


def reference_coin(x0, force_fn, num_steps):
    """Sharrock and Nemeth's adaptive coin SVGD as the paper writes it: x_{t+1} = x_0 + S_t / (L_t (G_t + L_t)) (L_t + R_t)."""
    x0 = np.asarray(x0, np.float64)
    x, total, absolute, bound, reward = x0.copy(), 0.0, 0.0, np.zeros_like(x0), 0.0
    for _ in range(num_steps):
        c = force_fn(x)
        bound = np.maximum(bound, np.abs(c))
        total, absolute = total + c, absolute + np.abs(c)
        reward = np.maximum(reward + c * (x - x0), 0.0)
        x = x0 + total / (bound * (absolute + bound)) * (bound + reward)
    return x


# A 1-D Gaussian mixture's gradient: asymmetric weights and scales, so sign errors show.
def mixture_log_density(x):
    return jnp.logaddexp(jnp.log(0.3) - 0.5 * ((x[0] + 1.0) / 0.7) ** 2 - jnp.log(0.7), jnp.log(0.7) - 0.5 * (x[0] - 2.0) ** 2)


def test_rbf_terms_and_stein_force_match_loops_and_autodiff():
    x = jax.random.normal(jax.random.key(0), (7, 3)) * jnp.array([1.0, 2.0, 0.5]) + 5.0
    gradients = jax.random.normal(jax.random.key(1), (7, 3))
    terms = jax.jit(vi.rbf_kernel())(x)
    np.testing.assert_allclose(terms.bandwidth, reference_median_bandwidth(x), rtol=1e-5)
    force, bandwidth = jax.jit(vi.stein_force, static_argnums=0)(vi.rbf_kernel(), x, gradients)
    np.testing.assert_allclose(force, reference_stein_force(x, gradients, float(bandwidth)), rtol=1e-4, atol=1e-5)
    h = float(terms.bandwidth)
    by_autodiff = jax.jit(vi.pairwise_kernel(lambda a, b: jnp.exp(-jnp.sum((a - b) ** 2) / h)))(x)
    np.testing.assert_allclose(terms.gram, by_autodiff.gram, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms.repulsion, by_autodiff.repulsion, rtol=1e-4, atol=1e-5)


def test_kernel_stein_discrepancy_matches_the_stein_kernel_by_autodiff():
    x = jax.random.normal(jax.random.key(2), (6, 2))
    score = jax.vmap(jax.grad(lambda p: -0.5 * jnp.sum((p - 0.3) ** 2 / jnp.array([1.0, 0.25]))))
    h = 1.7
    k = lambda a, b: jnp.exp(-jnp.sum((a - b) ** 2) / h)

    def stein_kernel(a, b, sa, sb):  # u(a, b) = k sa.sb + sa.grad_b k + sb.grad_a k + tr grad_a grad_b k
        trace = jnp.trace(jax.jacfwd(jax.grad(k, argnums=1), argnums=0)(a, b))
        return k(a, b) * sa @ sb + sa @ jax.grad(k, 1)(a, b) + sb @ jax.grad(k, 0)(a, b) + trace

    s = score(x)
    u = jax.jit(jax.vmap(lambda a, sa: jax.vmap(lambda b, sb: stein_kernel(a, b, sa, sb))(x, s)))(x, s)
    np.testing.assert_allclose(jax.jit(vi.kernel_stein_discrepancy)(x, s, h), np.sqrt(np.mean(u)), rtol=1e-5)


def test_coin_recursion_matches_the_paper_form():
    x0 = jax.random.uniform(jax.random.key(3), (5, 1), minval=-3.0, maxval=3.0)
    kernel = vi.coin_svgd_kernel(mixture_log_density, vi.rbf_kernel(1.5))
    state = kernel.init(x0)
    step = jax.jit(kernel.step)
    for _ in range(6):
        state, info = step(state)
    gradient = jax.jit(jax.vmap(jax.grad(mixture_log_density)))
    force_fn = lambda x: reference_stein_force(x, gradient(jnp.asarray(x, jnp.float32)), 1.5)
    np.testing.assert_allclose(state.positions, reference_coin(x0, force_fn, 6), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info.bandwidth, 1.5)


def test_the_first_coin_step_is_half_a_unit_along_the_force():
    x0 = jnp.array([[0.0, 0.0], [1.0, 3.0], [-2.0, 1.0]])
    kernel = vi.coin_svgd_kernel(lambda p: -0.5 * jnp.sum((p - jnp.array([10.0, -10.0])) ** 2))
    state, _ = jax.jit(lambda x: kernel.step(kernel.init(x)))(x0)
    np.testing.assert_allclose(state.positions - x0, 0.5 * jnp.array([[1.0, -1.0]] * 3))


def test_svgd_kernel_with_an_optax_optimizer_matches_the_plain_update():
    x0 = jax.random.normal(jax.random.key(4), (8, 1))
    by_rate = vi.svgd_kernel(mixture_log_density, 0.1)
    by_optax = vi.svgd_kernel(mixture_log_density, optax.sgd(0.1))
    a, info = jax.jit(lambda x: by_rate.step(by_rate.init(x)))(x0)
    b, _ = jax.jit(lambda x: by_optax.step(by_optax.init(x)))(x0)
    force, _ = jax.jit(lambda x: vi.stein_force(vi.rbf_kernel(), x, jax.vmap(jax.grad(mixture_log_density))(x)))(x0)
    np.testing.assert_allclose(a.positions, x0 + 0.1 * force, rtol=1e-6)
    np.testing.assert_allclose(b.positions, a.positions, rtol=1e-6)
    np.testing.assert_allclose(info.update_norm, jnp.mean(jnp.abs(0.1 * force)), rtol=1e-5)


# ----- a correlated Gaussian posterior, through the model ----------------------------

NOISE = jnp.array([[1.0, 0.48], [0.48, 0.36]])  # sds 1 and 0.6, correlation 0.8
YS = jnp.array([[1.9, -0.2], [0.4, -1.1], [1.6, -0.5], [1.0, -1.0]])
PRIOR_SCALE = 2.0


@ppl.gen
def correlated():
    mu = ppl.sample("mu", dist.MultivariateNormal(jnp.zeros(2), PRIOR_SCALE**2 * jnp.eye(2)))
    ppl.sample("ys", dist.MultivariateNormal(mu, NOISE).expand([4]))


def exact_posterior():
    noise_precision = np.linalg.inv(np.asarray(NOISE, np.float64))
    precision = np.eye(2) / PRIOR_SCALE**2 + len(YS) * noise_precision
    cov = np.linalg.inv(precision)
    return cov @ noise_precision @ np.asarray(YS, np.float64).sum(0), cov


def assert_moments_within_iid_error(particles, k=3.0):
    mean, cov = exact_posterior()
    n = particles.shape[0]
    x = np.asarray(particles, np.float64)
    mean_z = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    cov_z = (np.cov(x.T, bias=True) - cov) / np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(mean_z) < k) and np.all(np.abs(cov_z) < k), (mean_z, cov_z)


NUM_PARTICLES = 200


def test_svgd_matches_the_gaussian_posterior_with_a_progress_bar(capsys):
    result = vi.svgd(jax.random.key(0), correlated, (), {"ys": YS}, NUM_PARTICLES, 500, learning_rate=0.2)
    assert result.samples["mu"].shape == (NUM_PARTICLES, 2) and result.positions.shape == (NUM_PARTICLES, 2)
    assert_moments_within_iid_error(result.samples["mu"])
    assert result.history["update_norm"].shape == (500,)
    assert result.history["update_norm"][-1] < 1e-2 * result.history["update_norm"][0]
    assert "svgd: 100%" in capsys.readouterr().err


def test_coin_svgd_matches_the_gaussian_posterior():
    result = vi.coin_svgd(jax.random.key(0), correlated, (), {"ys": YS}, NUM_PARTICLES, 300, progress=False)
    assert_moments_within_iid_error(result.samples["mu"])
    summary = result.summary()
    assert summary.names == ["mu[0]", "mu[1]"] and list(summary.table) == ["mean", "sd", "5%", "50%", "95%"]
    np.testing.assert_allclose(summary.table["mean"], result.samples["mu"].mean(0), rtol=1e-5)


def test_a_new_key_or_learning_rate_reuses_the_compiled_run():
    run = lambda key, rate: vi.svgd(key, correlated, (), {"ys": YS}, 20, 30, learning_rate=rate, progress=False)
    run(jax.random.key(1), 0.05)
    compiled = _compiled._cache_size()
    other = run(jax.random.key(2), 0.01)
    assert _compiled._cache_size() == compiled
    assert other.history["bandwidth"].shape == (30,)
    inside = jax.jit(lambda key: run(key, 0.01).positions)  # inside a user's jit: the same particles
    np.testing.assert_allclose(inside(jax.random.key(2)), other.positions, rtol=1e-5, atol=1e-6)


def test_a_too_large_learning_rate_stops_with_the_last_finite_state():
    with pytest.raises(vi.FitDivergedError, match="lower the learning rate") as caught:
        vi.svgd(jax.random.key(1), correlated, (), {"ys": YS}, 20, 30, learning_rate=50.0, progress=False)
    error = caught.value
    assert 0 < error.step < 30 and error.history["update_norm"].shape == (error.step,)
    assert np.all(np.isfinite(error.state.positions))


# ----- a bimodal target ------------------------------------------------------------

MODE, MODE_SCALE = 3.0, 0.5


def bimodal(x):  # equal weights at -3 and +3, sd 0.5: the density between them is below e^-18 of the peaks
    return jnp.logaddexp(-0.5 * ((x[0] + MODE) / MODE_SCALE) ** 2, -0.5 * ((x[0] - MODE) / MODE_SCALE) ** 2)


@pytest.mark.parametrize("algorithm", ["svgd", "coin_svgd"])
def test_both_modes_hold_a_fair_share(algorithm):
    # Initial particles uniform on (-6, 6), covering both modes: SVGD moves
    # particles downhill of the kernel-smoothed density, so it finds the modes
    # its start reaches; a start inside one mode stays there.
    x0 = jax.random.uniform(jax.random.key(5), (100, 1), minval=-6.0, maxval=6.0)
    kernel = vi.svgd_kernel(bimodal, 0.05) if algorithm == "svgd" else vi.coin_svgd_kernel(bimodal)
    state, _ = jax.jit(lambda s: jax.lax.scan(lambda s, _: kernel.step(s), s, None, 1000))(kernel.init(x0))
    x = np.asarray(state.positions[:, 0], np.float64)
    right = x > 0
    assert 0.25 <= right.mean() <= 0.75
    for side, centre in ((right, MODE), (~right, -MODE)):
        n = side.sum()  # as iid draws of one mode: 3 standard errors of its mean and of its sd
        assert abs(x[side].mean() - centre) < 3 * MODE_SCALE / np.sqrt(n)
        assert abs(x[side].std() - MODE_SCALE) < 3 * MODE_SCALE / np.sqrt(2 * n)


# ----- errors --------------------------------------------------------------------------


@ppl.gen
def coin_flips():
    p = ppl.sample("p", dist.Beta(2.0, 2.0))
    ppl.sample("flips", dist.Bernoulli(p).expand([3]))


@ppl.gen
def with_a_discrete_latent():
    k = ppl.sample("k", dist.Poisson(3.0))
    ppl.sample("y", dist.Normal(k, 1.0))


def test_clear_errors():
    flips = {"flips": jnp.array([1.0, 0.0, 1.0])}
    with pytest.raises(ValueError, match="num_particles=1: need an integer >= 2"):
        vi.coin_svgd(jax.random.key(0), coin_flips, (), flips, 1, 10)
    with pytest.raises(ValueError, match="learning rate 0.0: need a positive number"):
        vi.svgd(jax.random.key(0), coin_flips, (), flips, 10, 10, learning_rate=0.0)
    with pytest.raises(ValueError, match="learning rate -0.1"):
        vi.svgd_kernel(mixture_log_density, -0.1)
    with pytest.raises(TypeError, match="exactly one of learning_rate"):
        vi.svgd(jax.random.key(0), coin_flips, (), flips, 10, 10)
    with pytest.raises(TypeError, match="exactly one of learning_rate"):
        vi.svgd(jax.random.key(0), coin_flips, (), flips, 10, 10, learning_rate=0.1, optimizer=optax.sgd(0.1))
    with pytest.raises(ValueError, match="no continuous latent choices"):
        vi.coin_svgd(jax.random.key(0), coin_flips, (), {**flips, "p": 0.5}, 10, 10)
    with pytest.raises(DiscreteLatentError, match="'k'.*vi.svgd moves continuous latents only"):
        vi.svgd(jax.random.key(0), with_a_discrete_latent, (), {"y": 1.0}, 10, 10, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"num_particles >= 2.*\(1, 2\)"):
        vi.coin_svgd_kernel(mixture_log_density).init(jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="bandwidth=0"):
        vi.rbf_kernel(0)
