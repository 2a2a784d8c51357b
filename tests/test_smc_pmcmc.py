"""Particle marginal Metropolis-Hastings leaves the exact posterior of a
static parameter invariant: x0 of the linear-Gaussian model, whose posterior
given every observation is Gaussian in closed form; many chains in one call
under mcmc.run, means and variances against the exact values within 5 MCSE."""

import arviz
import jax
import jax.numpy as jnp
import numpy as np

import ppl
from ppl import dist
from ppl.inference import mcmc, smc
from tests.smc_models import lg_data, lg_x0_posterior, linear_gaussian

T = 8


@ppl.gen
def random_walk(parameters):
    ppl.sample("x0", dist.Normal(parameters["x0"], 0.8))


def test_pmmh_targets_the_exact_parameter_posterior():
    y0, ys, observations = lg_data(T, seed=5)
    mean, variance = lg_x0_posterior(y0, ys)
    kernel = smc.pmmh(linear_gaussian, (T,), observations, 64, random_walk, ess_threshold=1.0)
    starts = {"x0": jnp.linspace(-1.0, 1.0, 16)}
    states = jax.vmap(kernel.init)(starts)
    result = mcmc.run(jax.random.key(0), kernel, states, 1500, keep=["x0"], progress=False)
    draws = np.asarray(result.samples["x0"], float)[:, 200:]
    se_mean = float(arviz.mcse(draws, method="mean"))
    centred = (draws - mean) ** 2
    se_var = float(arviz.mcse(centred, method="mean"))
    assert abs(draws.mean() - mean) < 5 * se_mean, (draws.mean(), mean, se_mean)
    assert abs(centred.mean() - variance) < 5 * se_var, (centred.mean(), variance, se_var)
    assert 0.1 < float(result.stats["acceptance_rate"].mean()) < 0.9
    trajectories = mcmc.run(jax.random.key(1), kernel, states, 3, progress=False).samples["steps"]["x"]
    assert trajectories.shape == (16, 3, T)  # each state carries a whole trajectory
