"""HMC, NUTS and MALA through the high-level calls, against exact posteriors
with tolerances from the Monte Carlo standard error (ESS-based, ArviZ)."""

import arviz
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import ppl
from ppl import dist
from ppl.inference import mcmc

K = 5  # standard errors


def _ess(draws):
    return float(arviz.ess(np.asarray(draws, np.float64), method="mean"))


def assert_mean(draws, truth, what, variance):
    """|mean - exact| < K standard errors, the SE from the exact posterior
    variance and the chains' ESS (a broken chain cannot widen its own band)."""
    draws = np.asarray(draws, np.float64)
    se = np.sqrt(variance / _ess(draws))
    assert abs(draws.mean() - truth) < K * se, f"{what}: mean {draws.mean():.4f}, exact {truth:.4f}, SE {se:.4f}"


def assert_variance(draws, mean, variance, what, excess_kurtosis=0.0):
    """The mean of (x - exact mean)^2 against the exact variance; SE from the
    exact fourth moment (Gaussian unless ``excess_kurtosis``) and the ESS."""
    squares = (np.asarray(draws, np.float64) - mean) ** 2
    se = np.sqrt((2.0 + excess_kurtosis) * variance**2 / _ess(squares))
    assert abs(squares.mean() - variance) < K * se, f"{what}: variance {squares.mean():.4f}, exact {variance:.4f}, SE {se:.4f}"


@ppl.gen
def normal_model(n):
    mu = ppl.sample("mu", dist.Normal(1.0, 2.0))
    ppl.sample("y", dist.Normal(mu, 0.5).expand([n]))
    return 3.0 * mu


YS = jnp.array([0.3, 1.4, 0.9, 2.2, 1.1, 0.6])


def _normal_posterior():
    precision = 1 / 2.0**2 + len(YS) / 0.5**2
    mean = (1.0 / 2.0**2 + float(YS.sum()) / 0.5**2) / precision
    return mean, 1 / precision


@pytest.mark.parametrize(
    "run",
    [
        lambda key: mcmc.nuts(key, normal_model, (6,), {"y": YS}, num_warmup=300, num_samples=1000, num_chains=4, progress=False),
        lambda key: mcmc.hmc(key, normal_model, (6,), {"y": YS}, step_size=0.1, num_integration_steps=8, num_samples=1500, num_chains=4, progress=False),
        lambda key: mcmc.mala(key, normal_model, (6,), {"y": YS}, step_size=0.25, num_warmup=300, num_samples=3000, num_chains=4, progress=False),
    ],
    ids=["nuts", "hmc", "mala"],
)
def test_conjugate_normal(run):
    result = run(jax.random.key(0))
    mean, variance = _normal_posterior()
    assert result.samples["mu"].shape[:1] == (4,)
    assert_mean(result.samples["mu"], mean, "mu", variance)
    assert_variance(result.samples["mu"], mean, variance, "mu")
    np.testing.assert_allclose(result.retvals, 3.0 * result.samples["mu"], rtol=1e-6)
    assert not bool(result.stats["diverging"].any())


@ppl.gen
def beta_binomial():
    p = ppl.sample("p", dist.Beta(2.0, 3.0))
    ppl.sample("k", dist.Binomial(20, p))


@ppl.gen
def dirichlet_multinomial():
    probs = ppl.sample("probs", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))
    ppl.sample("counts", dist.Multinomial(10, probs))


@ppl.gen
def dependent_bound():
    a = ppl.sample("a", dist.Uniform(0.0, 1.0))
    ppl.sample("b", dist.Uniform(0.0, 1.0 - a))


@ppl.gen
def three_supports():  # the three blocks are independent: one run samples them all
    ppl.sample("beta", beta_binomial())
    ppl.sample("dirichlet", dirichlet_multinomial())
    ppl.sample("bound", dependent_bound())


def test_constrained_supports():
    """Positive-interval (Beta, asymmetric: posterior Beta(5, 20)), simplex
    (Dirichlet(1+2, 2+3, 3+5)) and a bound that depends on another choice
    (E[b] = E[(1 - a) / 2] = 1/4): exact means, from one run over the three
    independent blocks (one compilation)."""
    observations = {"beta": {"k": 3}, "dirichlet": {"counts": jnp.array([2.0, 3.0, 5.0])}}
    samples = mcmc.nuts(jax.random.key(1), three_supports, (), observations, num_warmup=400, num_samples=1000,
                        num_chains=4, progress=False).samples
    p = samples["beta"]["p"]
    beta = scipy.stats.beta(5, 20)
    assert_mean(p, beta.mean(), "p", beta.var())
    assert_variance(p, beta.mean(), beta.var(), "p", excess_kurtosis=float(beta.stats("k")))
    probs = samples["dirichlet"]["probs"]
    assert probs.shape == (4, 1000, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    for i, alpha in enumerate([3.0, 5.0, 8.0]):  # Dirichlet marginals are Beta(alpha_i, 16 - alpha_i)
        assert_mean(probs[..., i], alpha / 16.0, f"probs[{i}]", scipy.stats.beta(alpha, 16.0 - alpha).var())
    draws = samples["bound"]
    assert bool(jnp.all(draws["b"] <= 1.0 - draws["a"]))
    assert_mean(draws["a"], 0.5, "a", 1 / 12)
    # b = (1 - a) v with v ~ U(0, 1) independent: E[b^2] = E[(1 - a)^2] / 3 = 1/9
    assert_mean(draws["b"], 0.25, "b", 1 / 9 - 1 / 16)


COVARIANCE = jnp.array([[1.0, 0.95 * 3.0], [0.95 * 3.0, 9.0]])


@ppl.gen
def correlated():
    ppl.sample("x", dist.MultivariateNormal(jnp.array([1.0, -2.0]), COVARIANCE))


@pytest.mark.parametrize("adaptation, dense_mass", [("stan", True), ("fisher_diag", False), ("low_rank", False)])
def test_correlated_gaussian(adaptation, dense_mass):
    result = mcmc.nuts(jax.random.key(2), correlated, (), {}, num_warmup=500, num_samples=1000, num_chains=4,
                       adaptation=adaptation, dense_mass=dense_mass, progress=False)
    x = result.samples["x"]
    assert_mean(x[..., 0], 1.0, "x[0]", 1.0)
    assert_mean(x[..., 1], -2.0, "x[1]", 9.0)
    assert_variance(x[..., 1], -2.0, 9.0, "x[1]")
    metric = result.state.inverse_mass_matrix
    if adaptation == "fisher_diag":  # g = -inv(S) x: sqrt(var x / var g) = sqrt(diag(S) / diag(inv(S)))
        assert metric.shape == (4, 2)
        expected = np.sqrt(np.diag(COVARIANCE) / np.diag(np.linalg.inv(COVARIANCE)))
        np.testing.assert_allclose(metric.mean(0), expected, rtol=0.25)
    else:  # the dense estimates approach the posterior covariance
        assert metric.shape == (4, 2, 2)
        np.testing.assert_allclose(metric.mean(0), COVARIANCE, rtol=0.25, atol=0.3)


EIGHT_Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@ppl.gen
def school(mu, tau, sigma):
    theta = ppl.sample("theta", dist.Normal(mu, tau))
    ppl.sample("y", dist.Normal(theta, sigma))


@ppl.gen
def eight_schools_centred(sigma):
    mu = ppl.sample("mu", dist.Normal(0.0, 5.0))
    tau = ppl.sample("tau", dist.HalfCauchy(5.0))
    ppl.sample("schools", school.vmap(in_axes=(None, None, 0))(mu, tau, sigma))


def test_funnel_divergences_are_reported():
    """The centred eight schools is a funnel in (tau, theta): NUTS diverges there."""
    observations = {"schools": {"y": EIGHT_Y}}
    result = mcmc.nuts(jax.random.key(3), eight_schools_centred, (EIGHT_SIGMA,), observations, num_warmup=300,
                       num_samples=300, num_chains=2, progress=False)
    assert int(result.stats["diverging"].sum()) > 0
    assert set(result.stats) == {"diverging", "acceptance_rate", "n_steps", "tree_depth", "step_size", "energy", "lp"}
    assert result.stats["tree_depth"].max() <= 10
    assert result.samples["schools"]["theta"].shape == (2, 300, 8)


@ppl.gen
def switch_model():
    z = ppl.sample("z", dist.Bernoulli(0.3))
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(mu + 2.0 * z, 1.0))
    return mu + 2.0 * z


def test_nuts_within_gibbs_on_a_discrete_switch():
    """P(z = 1 | y) and E[mu | y] in closed form: y | z ~ N(2z, 2), mu | z, y ~ N((y - 2z) / 2, 1/2)."""
    result = mcmc.nuts(jax.random.key(6), switch_model, (), {"y": 1.5}, num_warmup=300, num_samples=1000, gibbs=["z"], progress=False)
    likelihood = {z: scipy.stats.norm(2.0 * z, np.sqrt(2.0)).pdf(1.5) for z in (0, 1)}
    p1 = 0.3 * likelihood[1] / (0.3 * likelihood[1] + 0.7 * likelihood[0])
    assert_mean(result.samples["z"], p1, "z", p1 * (1 - p1))
    mean_mu = p1 * (1.5 - 2.0) / 2 + (1 - p1) * 1.5 / 2
    variance_mu = 0.5 + p1 * (1 - p1) * 1.0  # within + between (the conditional means differ by 1)
    assert_mean(result.samples["mu"], mean_mu, "mu", variance_mu)
    np.testing.assert_allclose(result.retvals, result.samples["mu"] + 2.0 * result.samples["z"], rtol=1e-6)


GAUSSIAN_MEAN = np.array([1.0, -2.0, 0.5])
GAUSSIAN_COVARIANCE = np.array([[1.0, 1.6, 0.1], [1.6, 4.0, -0.3], [0.1, -0.3, 0.5]])


def _gaussian_log_density(x):
    centred = x - GAUSSIAN_MEAN
    return -0.5 * centred @ jnp.asarray(np.linalg.inv(GAUSSIAN_COVARIANCE), x.dtype) @ centred


@pytest.mark.parametrize("metric, step_size, num_chains, num_draws", [("dense", 0.7, 64, 1000), ("diagonal", 0.4, 256, 1500)])
def test_nuts_kernel_vectorised_on_a_correlated_gaussian(metric, step_size, num_chains, num_draws):
    """The raw kernel, many chains in one jitted vmap + scan, started from
    exact draws (stationarity: no warmup, no burn-in): means, variances and
    one covariance against the exact ones. The dense metric is the covariance
    itself (the isotropic case, short trajectories: the dense code path); the
    diagonal one is the identity, which leaves scales and correlation to long
    trajectories, so a stopping rule that is not symmetric across the tree
    (e.g. Stan's extra checks across the seam of a doubling but not inside it,
    a 3% bias) shows, at the cost of more draws."""
    inverse_mass_matrix = GAUSSIAN_COVARIANCE if metric == "dense" else np.ones(3)
    kernel = mcmc.nuts_kernel(_gaussian_log_density, step_size, jnp.asarray(inverse_mass_matrix, jnp.float32))

    @jax.jit
    def chains(key):
        init_key, run_key = jax.random.split(key)
        starts = jax.random.multivariate_normal(init_key, GAUSSIAN_MEAN, GAUSSIAN_COVARIANCE, (num_chains,))

        def chain(start, key):
            def step(state, key):
                state, info = kernel.step(key, state)
                return state, (state.position, info.is_divergent)

            return jax.lax.scan(step, kernel.init(start), jax.random.split(key, num_draws))[1]

        return jax.vmap(chain)(starts, jax.random.split(run_key, num_chains))

    x, divergent = chains(jax.random.key(11))
    assert x.shape == (num_chains, num_draws, 3) and not bool(divergent.any())
    x = np.asarray(x, np.float64)
    for i in range(3):
        variance = GAUSSIAN_COVARIANCE[i, i]
        assert_mean(x[..., i], GAUSSIAN_MEAN[i], f"x[{i}]", variance)
        assert_variance(x[..., i], GAUSSIAN_MEAN[i], variance, f"x[{i}]")
    # E[(x0 - m0)(x1 - m1)] = S01; a Gaussian product has variance S00 S11 + S01^2
    product = (x[..., 0] - GAUSSIAN_MEAN[0]) * (x[..., 1] - GAUSSIAN_MEAN[1])
    s = GAUSSIAN_COVARIANCE
    assert_mean(product, s[0, 1], "cov(x0, x1)", s[0, 0] * s[1, 1] + s[0, 1] ** 2)
