"""Resampling in float64 (run by test_x64.py with JAX_ENABLE_X64=1): from
float64 log weights every scheme computes in float64 (no float32 anywhere in
its program) and stays unbiased; the weight summaries agree with NumPy's
float64 to 1e-12. (Not collected on its own: its name does not start with
``test_``.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.inference import smc
from ppl.inference.smc.resampling import effective_sample_size, normalized_weights
from tests.smc_models import lg_data, linear_gaussian
import test_smc_resampling as cases


@pytest.mark.parametrize("name", list(cases.FORMS))  # both forms of systematic resampling too
def test_resampling_computes_in_float64_and_is_unbiased(name):
    assert jax.config.jax_enable_x64
    log_weights = cases.log_weights(jnp.float64)
    program = str(jax.make_jaxpr(lambda key, lw: cases.FORMS[name](key, lw, 12))(jax.random.key(0), log_weights))
    assert "f64" in program and "f32" not in program, program
    cases.assert_unbiased(cases.offspring_counts(name, 12, jnp.float64), 12)


def test_weight_summaries_are_float64_to_1e12():
    log_weights = jnp.array([700.0, 699.0, -jnp.inf, 698.5, 650.0], jnp.float64)
    weights = np.exp(np.asarray(log_weights) - 700.0)
    weights /= weights.sum()
    normalized = normalized_weights(log_weights)
    ess = effective_sample_size(log_weights)
    assert normalized.dtype == jnp.float64 and ess.dtype == jnp.float64
    np.testing.assert_allclose(normalized, weights, rtol=1e-12)
    np.testing.assert_allclose(ess, 1.0 / np.sum(weights**2), rtol=1e-12)


def test_particle_filter_and_tempered_smc_in_float64():
    """The filter and tempered SMC compute in float64: log Z against the
    Kalman filter's to a tolerance float32 could not give at this N, and
    every result leaf in float64."""
    from ppl.inference import smc
    from smc_models import kalman, lg_data, linear_gaussian

    y0, ys, observations = lg_data(10)
    log_z, means, _ = kalman(y0, ys)
    result = smc.particle_filter(jax.random.key(0), linear_gaussian, (10,), observations, 20_000)
    assert result.log_marginal_likelihood.dtype == jnp.float64
    assert result.particles.choices["steps"]["x"].dtype == jnp.float64 and result.filtered_log_weights.dtype == jnp.float64
    assert abs(float(result.log_marginal_likelihood) - log_z) < 0.1
    tempered = smc.tempered(jax.random.key(1), linear_gaussian, (10,), observations, 500, max_num_steps=40)
    assert tempered.log_marginal_likelihood.dtype == jnp.float64 and tempered.positions.dtype == jnp.float64
    assert abs(float(tempered.log_marginal_likelihood) - log_z) < 1.0


def test_particle_gibbs_and_backward_smoothing_are_float64():
    _, _, observations = lg_data(6)
    kernel = smc.particle_gibbs(linear_gaussian, (6,), observations, 8)
    state, info = jax.jit(kernel.step)(jax.random.key(1), kernel.init({"x0": 0.0, "steps": {"x": jnp.zeros(6)}}))
    filtered = smc.particle_filter(jax.random.key(0), linear_gaussian, (6,), observations, 64)
    smoothed = smc.backward_smoothing(jax.random.key(1), linear_gaussian, (6,), observations, filtered, 16)
    for leaf in jax.tree.leaves((state.trace.choices, state.trace.log_density, info, smoothed.choices, smoothed.log_density)):
        assert leaf.dtype == jnp.float64, leaf.dtype
