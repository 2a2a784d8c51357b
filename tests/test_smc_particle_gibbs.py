"""Particle Gibbs (conditional SMC), with and without ancestor sampling,
leaves the exact posterior invariant: the linear-Gaussian model's states
given every observation are jointly Gaussian in closed form. Many chains
start at exact posterior draws and make a few transitions of the cycle
(MH on the prefix's x0, then particle Gibbs on the scan's states) under
mcmc.run; the chains' last draws are independent draws of the posterior
if the kernel is right, so their means and variances are compared with
the exact ones within 4.5 standard errors of iid draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference import mcmc, smc
from tests.smc_models import lg_data, lg_posterior, linear_gaussian, running_total

T, CHAINS, TRANSITIONS, PARTICLES = 8, 2000, 6, 4


def _exact_draws(mean, cov, n, seed):
    return np.random.default_rng(seed).multivariate_normal(mean, cov, size=n).astype(np.float32)


@pytest.mark.parametrize("ancestor_sampling", [True, False])
def test_particle_gibbs_keeps_the_exact_posterior(ancestor_sampling):
    y0, ys, observations = lg_data(T, seed=3)
    mean, cov = lg_posterior(y0, ys)
    start = _exact_draws(mean, cov, CHAINS, seed=int(ancestor_sampling))
    pg = smc.particle_gibbs(linear_gaussian, (T,), observations, PARTICLES, ancestor_sampling=ancestor_sampling)
    kernel = mcmc.cycle(mcmc.mh(linear_gaussian, ["x0"]), pg)
    states = jax.vmap(kernel.init)(jax.vmap(pg.init)({"x0": start[:, 0], "steps": {"x": start[:, 1:]}}).trace)
    result = mcmc.run(jax.random.key(int(ancestor_sampling)), kernel, states, TRANSITIONS, progress=False)
    last = np.concatenate(
        [np.asarray(result.samples["x0"])[:, -1:], np.asarray(result.samples["steps"]["x"])[:, -1]], axis=1
    ).astype(float)
    variance = np.diag(cov)
    z_mean = (last.mean(0) - mean) / np.sqrt(variance / CHAINS)
    z_var = (last.var(0, ddof=1) / variance - 1.0) / np.sqrt(2.0 / (CHAINS - 1))
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    assert np.all(np.abs(z_var) < 4.5), z_var
    # the chains moved (with 4 particles plain particle Gibbs rarely leaves its early states)
    update_rate = float(np.mean(result.stats["1/update_rate"]))
    assert update_rate > (0.35 if ancestor_sampling else 0.04), update_rate  # measured 0.48 and 0.08


def test_ancestor_sampling_needs_a_markov_carry():
    observations = {"steps": {"y": jnp.zeros(4)}}
    with pytest.raises(ValueError, match="ancestor_sampling=False"):
        smc.particle_gibbs(running_total, (4,), observations, 8)
    smc.particle_gibbs(running_total, (4,), observations, 8, ancestor_sampling=False)  # plain particle Gibbs is fine
    with pytest.raises(ValueError, match="num_particles"):
        smc.particle_gibbs(linear_gaussian, (4,), observations, 1)
