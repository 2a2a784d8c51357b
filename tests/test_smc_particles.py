"""Programmable SMC: every combination of init / extend / change / resample /
rejuvenate keeps the estimate of Z unbiased (mean of exp(log Z_hat - log Z)
over independent runs in one vmapped call, against 1 within 4.5 SE)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import ppl
from ppl import dist
from ppl.inference import mcmc, smc
from tests.smc_models import assert_z_unbiased, A, Q, R, S0, kalman, lg_data

RUNS = 400
NOISE = 0.6
YS = jnp.array([1.2, 0.4, 1.9, 1.1])


def _exact_log_evidence(ys):
    """log p(ys) for mu ~ N(0, 1), y_k ~ N(mu, NOISE^2)."""
    k = len(ys)
    covariance = NOISE**2 * np.eye(k) + np.ones((k, k))
    return multivariate_normal(np.zeros(k), covariance).logpdf(np.asarray(ys, float))


@ppl.gen
def tempered(beta):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.factor("likelihood", beta * jnp.sum(dist.Normal(mu, NOISE).log_prob(YS)))


@pytest.mark.parametrize("method", ["systematic", "stratified", "residual", "multinomial"])
def test_tempering_with_resample_and_move_is_unbiased(method):
    def run(key):
        keys = jax.random.split(key, 7)
        particles = smc.init(keys[0], tempered, (0.0,), {}, 32)
        for i, beta in enumerate([0.1, 0.4, 1.0]):
            particles = smc.change(particles, tempered, (beta,))
            particles, _ = smc.resample(keys[1 + 2 * i], particles, method=method, ess_threshold=0.6)
            particles, _ = smc.rejuvenate(keys[2 + 2 * i], particles, mcmc.mh(tempered, ["mu"]), num_steps=2)
        return particles.log_marginal_likelihood

    log_z_hats = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), RUNS))
    assert_z_unbiased(log_z_hats, _exact_log_evidence(YS))


@ppl.gen
def unrolled(K):
    """The linear-Gaussian model of tests/smc_models.py with a Python loop:
    each extension to K + 1 adds the addresses x{K}, y{K} (Gen's unrolled form)."""
    x = ppl.sample("x0", dist.Normal(0.0, S0))
    ppl.sample("y0", dist.Normal(x, R))
    for k in range(1, K + 1):
        x = ppl.sample(f"x{k}", dist.Normal(A * x, Q))
        ppl.sample(f"y{k}", dist.Normal(x, R))


@ppl.gen
def towards_observation(trace, y):
    """A proposal for the newest state from the previous one and the new observation."""
    K = trace.args[0]
    ppl.sample(f"x{K + 1}", dist.Normal(0.5 * A * trace.choices[f"x{K}"] + 0.5 * y, 0.8))


def test_extend_with_proposals_resampling_and_moves_is_unbiased():
    steps = 5
    y0, ys, _ = lg_data(steps, seed=3)
    log_z, _, _ = kalman(y0, ys)

    def run(key):
        keys = jax.random.split(key, 3 * steps + 1)
        particles = smc.init(keys[0], unrolled, (0,), {"y0": y0}, 32)
        for k in range(1, steps + 1):
            observation = {f"y{k}": ys[k - 1]}
            proposal = towards_observation if k % 2 else None  # alternate proposal and prior
            args = (ys[k - 1],) if proposal else ()
            particles = smc.extend(keys[3 * k - 2], particles, unrolled, (k,), observation, proposal=proposal, proposal_args=args)
            particles, _ = smc.resample(keys[3 * k - 1], particles, ess_threshold=0.5)
            particles, _ = smc.rejuvenate(keys[3 * k], particles, mcmc.mh(unrolled, [f"x{k}"]))
        return particles.log_marginal_likelihood

    log_z_hats = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), RUNS))
    assert_z_unbiased(log_z_hats, log_z)


def test_init_with_a_proposal_is_unbiased():
    @ppl.gen
    def wide():
        ppl.sample("mu", dist.Normal(1.0, 1.5))

    @ppl.gen
    def conjugate():
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("y", dist.Normal(mu, NOISE).expand([4]))

    run = lambda k: smc.init(k, conjugate, (), {"y": YS}, 16, proposal=wide).log_marginal_likelihood
    assert_z_unbiased(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(2), RUNS)), _exact_log_evidence(YS))


def test_change_refuses_new_choices():
    particles = smc.init(jax.random.key(0), tempered, (0.0,), {}, 10)

    @ppl.gen
    def more(beta):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("extra", dist.Normal(mu, 1.0))

    @ppl.gen
    def more_again(beta):
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("extra", dist.Normal(mu, 1.0))
        ppl.sample("another", dist.Normal(mu, 1.0))

    with pytest.raises(ValueError, match="another.*smc.extend"):
        smc.change(smc.init(jax.random.key(0), more, (0.0,), {}, 10), more_again, (1.0,))
    with pytest.raises(ppl.AddressError, match="likelihood"):
        smc.change(particles, more, (1.0,))


def test_extend_refuses_a_choice_that_changes_shape():
    @ppl.gen
    def walk(T):
        ppl.sample("x", dist.Normal(0.0, 1.0).expand([T]))

    particles = smc.init(jax.random.key(0), walk, (2,), {}, 10)
    with pytest.raises(ValueError, match=r"'x' has shape \(2,\).*\(3,\)"):
        smc.extend(jax.random.key(1), particles, walk, (3,), {})
