"""Importance sampling against exact answers.

Monte Carlo tolerances are K standard errors (K = 4.5, seeds fixed):

- log marginal likelihood: log Z_hat = log mean(w). By the delta method,
  Var(log Z_hat) ~= Var(w) / (N E[w]^2), so SE ~= std(w / mean(w)) / sqrt(N),
  estimated from the same weights (``log_ml_standard_error``). Its bias,
  about -SE^2 / 2, is negligible next to SE for the SEs asserted below (each
  test also asserts its SE is small, so the check has power).
- posterior expectations: SE ~= posterior_sd / sqrt(ESS).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import betaln

import ppl
from ppl import dist

K = 4.5

# ----- conjugate normal: mu ~ N(m0, s0), y_i ~ N(mu, s) ------------------------

M0, S0, S = 1.0, 2.0, 1.0
YS = np.array([2.3, 1.7, 3.1, 2.8, 2.2, 3.6])


@ppl.gen
def conjugate_normal(n):
    mu = ppl.sample("mu", dist.Normal(M0, S0))
    return ppl.sample("y", dist.Normal(mu, S).expand([n]))


def normal_posterior():
    precision = 1 / S0**2 + len(YS) / S**2
    mean = (M0 / S0**2 + YS.sum() / S**2) / precision
    return mean, precision**-0.5


def normal_log_marginal():
    """log N(y; m0 1, s^2 I + s0^2 1 1^T), in float64."""
    n = len(YS)
    cov = S**2 * np.eye(n) + S0**2 * np.ones((n, n))
    diff = YS - M0
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (n * np.log(2 * np.pi) + logdet + diff @ np.linalg.solve(cov, diff))


def log_ml_standard_error(log_weights):
    w = np.exp(np.asarray(log_weights, np.float64) - np.max(log_weights))
    return np.std(w / w.mean()) / np.sqrt(len(w))


def run_normal(key, n_particles, **kwargs):
    return ppl.inference.importance(key, conjugate_normal, (len(YS),), {"y": jnp.asarray(YS)}, n_particles, **kwargs)


def check_normal(result, n_particles):
    assert result.log_weights.shape == (n_particles,)
    assert result.traces.choices["mu"].shape == (n_particles,)
    se = log_ml_standard_error(result.log_weights)
    assert se < 0.05
    assert abs(float(result.log_marginal_likelihood) - normal_log_marginal()) < K * se
    mean, sd = normal_posterior()
    ess = float(result.ess)
    assert 0.05 * n_particles < ess <= n_particles
    assert abs(float(result.estimate(lambda c: c["mu"])) - mean) < K * sd / np.sqrt(ess)
    # The posterior variance too: Var((mu - mean)^2) = 2 sd^4 for a normal posterior.
    second = float(result.estimate(lambda c: (c["mu"] - mean) ** 2))
    assert abs(second - sd**2) < K * np.sqrt(2) * sd**2 / np.sqrt(ess)


def test_likelihood_weighting_conjugate_normal():
    check_normal(run_normal(jax.random.key(0), 50_000), 50_000)


def test_a_million_particles():
    """Chunked (chunk_size 65,536 does not divide a million) and in memory."""
    result = run_normal(jax.random.key(1), 1_000_000)
    check_normal(result, 1_000_000)
    assert log_ml_standard_error(result.log_weights) < 0.005


def test_chunked_run_is_correct_and_chunks_are_independent():
    """Each chunk draws its particles jointly from its own key: a chunked run is
    as good an estimate as an unchunked one, and no two chunks repeat draws."""
    chunked = run_normal(jax.random.key(2), 20_000, chunk_size=3_000)  # 6 full chunks and a remainder
    check_normal(chunked, 20_000)
    mu = np.asarray(chunked.traces.choices["mu"])
    first, second = mu[:3_000], mu[3_000:6_000]
    assert np.sum(first == second) < 5  # float32 draws coincide by chance only
    assert abs(np.corrcoef(first, second)[0, 1]) < K / np.sqrt(3_000)


@ppl.gen
def normal_proposal(loc, scale):
    return ppl.sample("mu", dist.Normal(loc, scale))


def test_exact_posterior_proposal_gives_constant_weights():
    """With q = p(mu | y), every weight p(mu, y) / q(mu) is p(y) exactly (a
    sign error on q would make the weights vary). Float32 tolerance: the log
    densities summed are O(10), each accurate to ~1e-6."""
    mean, sd = normal_posterior()
    result = run_normal(jax.random.key(3), 2000, proposal=normal_proposal, proposal_args=(float(mean), float(sd)))
    np.testing.assert_allclose(result.log_weights, normal_log_marginal(), atol=1e-4)
    np.testing.assert_allclose(result.ess, 2000, rtol=1e-4)
    mus = result.traces.choices["mu"]  # drawn from the proposal, not the prior
    assert abs(float(mus.mean()) - mean) < K * sd / np.sqrt(2000)


def test_custom_proposal_is_unbiased():
    """A wider, shifted proposal: weights vary but estimates are exact in the limit."""
    mean, sd = normal_posterior()
    result = run_normal(jax.random.key(4), 50_000, proposal=normal_proposal, proposal_args=(mean + 0.3, 1.5 * sd))
    check_normal(result, 50_000)


# ----- beta-bernoulli: p ~ Beta(a, b), y_i ~ Bernoulli(p) ----------------------

A, B = 2.0, 5.0
FLIPS = np.array([1, 1, 0, 1, 1, 1, 0, 1], np.int32)


@ppl.gen
def beta_bernoulli(n):
    p = ppl.sample("p", dist.Beta(A, B))
    return ppl.sample("y", dist.Bernoulli(p).expand([n]))


def beta_posterior():
    a, b = A + FLIPS.sum(), B + len(FLIPS) - FLIPS.sum()
    return a, b


def test_likelihood_weighting_beta_bernoulli():
    n = 50_000
    result = ppl.inference.importance(jax.random.key(5), beta_bernoulli, (len(FLIPS),), {"y": FLIPS}, n)
    a, b = beta_posterior()
    exact = float(betaln(a, b) - betaln(A, B))
    se = log_ml_standard_error(result.log_weights)
    assert se < 0.05
    assert abs(float(result.log_marginal_likelihood) - exact) < K * se
    mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert abs(float(result.estimate(lambda c: c["p"])) - mean) < K * sd / np.sqrt(float(result.ess))


@ppl.gen
def beta_proposal(a, b):
    return ppl.sample("p", dist.Beta(a, b))


def test_exact_beta_proposal_gives_constant_weights():
    a, b = beta_posterior()
    args, observations = (len(FLIPS),), {"y": FLIPS}
    result = ppl.inference.importance(
        jax.random.key(6), beta_bernoulli, args, observations, 2000, proposal=beta_proposal, proposal_args=(a, b)
    )
    np.testing.assert_allclose(result.log_weights, float(betaln(a, b) - betaln(A, B)), atol=1e-4)


# ----- a discrete latent: resampling ------------------------------------------

PRIOR = np.array([0.5, 0.3, 0.2])
LOCS = np.array([-1.0, 0.5, 2.0])
Y_OBS = 0.8


@ppl.gen
def discrete_latent():
    k = ppl.sample("k", dist.Categorical(jnp.asarray(PRIOR)))
    return ppl.sample("y", dist.Normal(jnp.asarray(LOCS)[k], 1.0))


def test_discrete_posterior_and_resampling():
    result = ppl.inference.importance(jax.random.key(7), discrete_latent, (), {"y": Y_OBS}, 4000)
    ks, weights = np.asarray(result.traces.choices["k"]), np.asarray(result.normalized_weights, np.float64)
    particle_mass = np.array([weights[ks == j].sum() for j in range(3)])
    # The weighted particles estimate the exact posterior (SE from the ESS).
    posterior = PRIOR * np.exp(-0.5 * (Y_OBS - LOCS) ** 2)
    posterior /= posterior.sum()
    ess = float(result.ess)
    assert np.all(np.abs(particle_mass - posterior) < K * np.sqrt(posterior * (1 - posterior) / ess))
    # Resampling draws particles in proportion to their weights: given the
    # particles, each category's count is binomial(n, particle_mass).
    n = 100_000
    resampled = result.resample(jax.random.key(8), n)
    assert resampled.choices["k"].shape == (n,) and resampled.log_density.shape == (n,)
    counts = np.bincount(np.asarray(resampled.choices["k"]), minlength=3) / n
    assert np.all(np.abs(counts - particle_mass) < K * np.sqrt(particle_mass * (1 - particle_mass) / n))
    # Resampled traces are whole particles: the log density goes with the choice.
    expected = np.log(PRIOR) - 0.5 * (Y_OBS - LOCS) ** 2 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(resampled.log_density, expected[np.asarray(resampled.choices["k"])], rtol=1e-5)
    assert resampled.args == ()


# ----- jit and vmap -------------------------------------------------------------


def test_importance_under_jit():
    observe = jax.jit(lambda key, ys: run_normal_on(key, ys, 2000).log_weights)
    eager = run_normal(jax.random.key(9), 2000)
    np.testing.assert_allclose(observe(jax.random.key(9), jnp.asarray(YS)), eager.log_weights, rtol=1e-5)


def run_normal_on(key, ys, n):
    return ppl.inference.importance(key, conjugate_normal, (len(YS),), {"y": ys}, n)


def test_importance_under_vmap_over_keys():
    """Independent runs in one vmap: each equals its eager run, and the spread
    of the R estimates gives an empirical SE for their mean."""
    runs, n = 16, 2000
    keys = jax.random.split(jax.random.key(10), runs)
    estimates = jax.vmap(lambda k: run_normal_on(k, jnp.asarray(YS), n).log_marginal_likelihood)(keys)
    estimates = np.asarray(estimates, np.float64)
    for i in (0, runs - 1):
        np.testing.assert_allclose(estimates[i], run_normal(keys[i], n).log_marginal_likelihood, rtol=1e-5)
    assert len(set(estimates.tolist())) == runs  # the runs are independent
    se = estimates.std(ddof=1) / np.sqrt(runs)
    assert 0 < se < 0.05
    assert abs(estimates.mean() - normal_log_marginal()) < K * se


def test_result_is_a_pytree_through_jit():
    result = jax.jit(lambda k: run_normal_on(k, jnp.asarray(YS), 500))(jax.random.key(11))
    assert isinstance(result, ppl.inference.ImportanceResult)
    assert result.traces.args == (len(YS),)
    assert result.traces.choices["y"].shape == (500, len(YS))


@pytest.mark.parametrize("bad", [0, -3, 10.0, "100"])
def test_num_particles_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="num_particles must be a positive Python int"):
        run_normal(jax.random.key(0), bad)


def test_observed_values_under_a_vmapped_cond_are_stored_once():
    # Both branches of a ppl.cond pass the observed "y" through; the select that
    # runs the branches under ppl's vmap must not make it look particle-dependent.
    from models import robust_point

    model = robust_point.repeat(3)
    observations = {"v": {"y": jnp.array([0.1, 2.0, -1.0])}}
    result = ppl.inference.importance(jax.random.key(0), model, (0.0,), observations, 64)
    assert result.particles.choices["v"]["y"].shape == (3,)
    assert result.traces.choices["v"]["y"].shape == (64, 3)


def test_particles_store_choices_and_retval_only():
    """Traces the GFI makes keep per-choice log densities for update and
    regenerate; particles do not (a million of them are stored), nor their
    joint log density (computed for the traces asked for); resampled
    particles are still moved exactly by regenerate (which scores them once)."""
    result = run_normal(jax.random.key(12), 200)
    particles = result.particles
    assert particles.log_density is None
    assert len(jax.tree.leaves(particles)) == len(jax.tree.leaves((particles.choices, particles.retval)))
    traces = result.traces
    expected = jax.vmap(lambda c: conjugate_normal.assess(c, (len(YS),))[0])(traces.choices)
    np.testing.assert_allclose(traces.log_density, expected, rtol=1e-6)
    trace = result.resample(jax.random.key(13), 1)[0]
    new, log_weight = conjugate_normal.regenerate(jax.random.key(14), trace, ppl.select("mu"), (len(YS),))
    likelihood = lambda mu: dist.Normal(mu, S).log_prob(jnp.asarray(YS)).sum()
    expected = likelihood(new.choices["mu"]) - likelihood(trace.choices["mu"])  # the prior terms cancel
    np.testing.assert_allclose(log_weight, expected, rtol=1e-5, atol=1e-4)
