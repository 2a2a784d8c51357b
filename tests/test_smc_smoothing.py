"""Backward simulation smoothing (FFBSi) against the exact smoothing
distribution of the linear-Gaussian model (all states given all
observations: Gaussian in closed form). Independent filter + smoother runs
in one vmapped call; each run's mean and mean squared deviation of every
state are compared with the exact values within 4.5 standard errors
estimated from the spread across runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference import smc
from tests.smc_models import lg_data, lg_posterior, linear_gaussian, running_total

T, PARTICLES, TRAJECTORIES, RUNS = 8, 128, 64, 32


def test_backward_smoothing_matches_the_exact_smoothing_distribution():
    y0, ys, observations = lg_data(T, seed=2)
    mean, cov = lg_posterior(y0, ys)

    def run(key):
        filter_key, smooth_key = jax.random.split(key)
        filtered = smc.particle_filter(filter_key, linear_gaussian, (T,), observations, PARTICLES)
        smoothed = smc.backward_smoothing(smooth_key, linear_gaussian, (T,), observations, filtered, TRAJECTORIES)
        return jnp.concatenate([smoothed.choices["x0"][:, None], smoothed.choices["steps"]["x"]], axis=1), smoothed

    states, smoothed = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), RUNS))
    states = np.asarray(states, float)  # (runs, trajectories, T + 1)
    for estimate, exact in [(states.mean(1), mean), (((states - mean) ** 2).mean(1), np.diag(cov))]:
        z = (estimate.mean(0) - exact) / (estimate.std(0, ddof=1) / np.sqrt(RUNS))
        assert np.all(np.abs(z) < 4.5), z
    # the draws are model traces, observations in place
    np.testing.assert_array_equal(smoothed.choices["steps"]["y"][0, 0], ys)
    assert smoothed.log_density.shape == (RUNS, TRAJECTORIES)


def test_backward_smoothing_checks_its_inputs():
    observations = {"steps": {"y": jnp.zeros(4)}}
    filtered = smc.particle_filter(jax.random.key(0), running_total, (4,), observations, 16)
    with pytest.raises(ValueError, match="result.particles"):
        smc.backward_smoothing(jax.random.key(1), running_total, (4,), observations, filtered, 8)
    with pytest.raises(ValueError, match="num_trajectories"):
        smc.backward_smoothing(jax.random.key(1), running_total, (4,), observations, filtered, 0)
