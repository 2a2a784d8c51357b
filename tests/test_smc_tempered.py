"""Tempered SMC on a bimodal posterior with unequal modes: log Z unbiased in
Z and each mode's mass against quadrature, for every move kernel, waste-free
SMC, the conditional-ESS criterion and AIS (a fixed schedule, no resampling).
Each check runs many independent samplers in one vmapped call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import ppl
from ppl import dist
from ppl.inference import smc
from tests.smc_models import assert_z_unbiased

PRIOR_MEAN, PRIOR_SCALE, OBSERVED, NOISE = 0.6, 2.0, 4.0, 0.7
RUNS = 64


@ppl.gen
def bimodal():
    mu = ppl.sample("mu", dist.Normal(PRIOR_MEAN, PRIOR_SCALE))
    ppl.sample("y", dist.Normal(mu**2, NOISE))


def _exact():
    """(log Z, posterior mass of mu > 0) by quadrature."""
    grid = np.linspace(-12.0, 12.0, 400_001)
    joint = norm.pdf(grid, PRIOR_MEAN, PRIOR_SCALE) * norm.pdf(OBSERVED, grid**2, NOISE)
    z = np.trapezoid(joint, grid)
    return np.log(z), np.trapezoid(np.where(grid > 0, joint, 0.0), grid) / z


def _runs(num_particles, **options):
    def run(key):
        result = smc.tempered(key, bimodal, (), {"y": OBSERVED}, num_particles, max_num_steps=60, **options)
        weights = jnp.exp(result.log_weights)
        return result.log_marginal_likelihood, jnp.sum(weights * (result.particles.choices["mu"] > 0)), result.num_steps

    return jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), RUNS))


OPTIONS = {
    "hmc": {},
    "mala": {"kernel": "mala"},
    "rwmh": {"kernel": "rwmh", "num_mcmc_steps": 20},
    "waste-free": {"waste_free": 8},
    "cess": {"criterion": "cess"},
    "ais": {"resample": None, "temperatures": np.linspace(0.0, 1.0, 40) ** 4, "kernel": "rwmh"},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_log_z_and_mode_masses_against_quadrature(name):
    log_z, mass = _exact()
    log_z_hats, masses, steps = (np.asarray(a, float) for a in _runs(256, **OPTIONS[name]))
    assert_z_unbiased(log_z_hats, log_z, max_standard_error=0.1)
    mass_se = masses.std(ddof=1) / np.sqrt(RUNS)
    assert abs(masses.mean() - mass) < 4.5 * mass_se + 1e-3, (masses.mean(), mass, mass_se)
    assert 0.2 < mass < 0.8 and abs(mass - 0.5) > 5 * mass_se  # both modes matter, and the check tells them apart
    assert np.all(steps >= 2)


def test_schedule_ends_at_one_and_errors():
    result = smc.tempered(jax.random.key(1), bimodal, (), {"y": OBSERVED}, 100, max_num_steps=30)
    k = int(result.num_steps)
    temperatures = np.asarray(result.temperatures)
    assert temperatures[0] == 0.0 and temperatures[k] == 1.0 and np.all(np.diff(temperatures[: k + 1]) > 0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        smc.tempered(jax.random.key(0), bimodal, (), {"y": OBSERVED}, 100, kernel="nuts?")
    with pytest.raises(ValueError, match="waste_free"):
        smc.tempered(jax.random.key(0), bimodal, (), {"y": OBSERVED}, 100, waste_free=7)
    with pytest.raises(ValueError, match="temperatures must increase"):
        smc.tempered(jax.random.key(0), bimodal, (), {"y": OBSERVED}, 100, temperatures=[0.0, 0.5, 0.4, 1.0])
    with pytest.raises(ValueError, match="target_ess"):
        smc.tempered(jax.random.key(0), bimodal, (), {"y": OBSERVED}, 100, target_ess=1.5)
