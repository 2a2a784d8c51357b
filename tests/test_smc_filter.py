"""The particle filter against exact answers: the Kalman filter on a
linear-Gaussian model, the forward algorithm on a discrete HMM.

The log marginal likelihood estimate is unbiased in Z, not in log Z: each
test checks the mean of exp(log Z_hat - log Z) over independent runs (one
vmapped, compiled call) against 1 within 4.5 standard errors."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl.inference import mcmc, smc
from tests.smc_models import assert_z_unbiased, forward, hmm, hmm_data, kalman, lg_data, lg_step, linear_gaussian

T = 15
RUNS = 400
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runs(model, args, observations, num_particles, **options):
    run = lambda k: smc.particle_filter(k, model, args, observations, num_particles, **options).log_marginal_likelihood
    return jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), RUNS))


@pytest.mark.parametrize("resample", ["systematic", "stratified", "residual", "multinomial"])
def test_log_z_unbiased_against_kalman(resample):
    y0, ys, observations = lg_data(T)
    log_z, _, _ = kalman(y0, ys)
    assert_z_unbiased(_runs(linear_gaussian, (T,), observations, 64, resample=resample), log_z)


@ppl.gen
def data_driven(x, _, observation):
    """A proposal that ignores the model's dynamics: centred on the observation."""
    ppl.sample("x", dist.Normal(0.5 * x + 0.5 * observation["y"], 1.0))


def test_log_z_unbiased_with_a_proposal_and_rejuvenation():
    y0, ys, observations = lg_data(T)
    log_z, _, _ = kalman(y0, ys)
    assert_z_unbiased(_runs(linear_gaussian, (T,), observations, 64, proposal=data_driven, ess_threshold=1.0), log_z)
    kernel = mcmc.mh(lg_step, ["x"])
    assert_z_unbiased(_runs(linear_gaussian, (T,), observations, 64, rejuvenate=kernel), log_z)


def test_log_z_unbiased_against_the_forward_algorithm():
    y0, ys, observations = hmm_data(T)
    assert_z_unbiased(_runs(hmm, (T,), observations, 32), forward(y0, ys))


def test_filtering_means_match_kalman():
    y0, ys, observations = lg_data(T)
    _, means, _ = kalman(y0, ys)

    def run(key):
        result = smc.particle_filter(key, linear_gaussian, (T,), observations, 4000)
        return jnp.sum(jnp.exp(result.filtered_log_weights) * result.filtered_choices["x"], axis=1)

    estimates = np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(2), 40)), float)
    # the standard error from the spread of 40 independent filters (resampling correlates particles)
    mean, se = estimates.mean(axis=0), estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    np.testing.assert_array_less(np.abs(mean - means), 4.5 * se)
    assert np.any(np.abs(1.02 * mean - means) > 4.5 * se)  # the check can fail: a 2% error is caught


def test_final_particles_are_model_traces():
    _, _, observations = lg_data(T)
    result = smc.particle_filter(jax.random.key(3), linear_gaussian, (T,), observations, 50)
    particles = result.particles
    assert particles.choices["steps"]["x"].shape == (50, T)
    np.testing.assert_array_equal(particles.choices["steps"]["y"][7], observations["steps"]["y"])
    assess = jax.vmap(lambda c: linear_gaussian.assess(c, (T,))[0])(particles.choices)
    np.testing.assert_allclose(particles.log_density, assess, rtol=1e-5)
    np.testing.assert_allclose(particles.retval[0], particles.choices["steps"]["x"][:, -1])
    assert result.ess.shape == (T + 1,) and result.ancestors.shape == (T, 50)
    # a final particle's step t is the step-t particle its ancestry passes through
    index = 11
    for t in reversed(range(T)):
        assert particles.choices["steps"]["x"][11, t] == result.filtered_choices["x"][t, index]
        index = int(result.ancestors[t, index])


def test_online_form_matches_the_whole_run():
    _, ys, observations = lg_data(T)
    key = jax.random.key(4)
    whole = smc.particle_filter(key, linear_gaussian, (T,), observations, 100)
    init_key, steps_key = jax.random.split(key)
    state, _ = smc.filter_init(init_key, linear_gaussian, (T,), {"y0": observations["y0"]}, 100)
    step = jax.jit(smc.filter_step)
    for k, y in zip(jax.random.split(steps_key, T), ys):
        state, info = step(k, state, {"y": y})
    np.testing.assert_allclose(state.log_marginal_likelihood, whole.log_marginal_likelihood, rtol=1e-5)


def test_compiles_once_and_threshold_zero_never_resamples():
    _, ys, observations = lg_data(T)
    traces = []
    run = jax.jit(lambda k, obs: (traces.append(1), smc.particle_filter(k, linear_gaussian, (T,), obs, 30))[1])
    run(jax.random.key(0), observations)
    other = {"y0": observations["y0"] + 1.0, "steps": {"y": ys * 2.0}}
    run(jax.random.key(1), other)
    assert len(traces) == 1
    never = smc.particle_filter(jax.random.key(0), linear_gaussian, (T,), observations, 30, ess_threshold=0.0)
    always = smc.particle_filter(jax.random.key(0), linear_gaussian, (T,), observations, 30, ess_threshold=1.0)
    assert not bool(never.resampled.any()) and bool(always.resampled.all())


@ppl.gen
def two_scans(T):
    a = ppl.sample("a", lg_step.scan(T)(0.0, None))
    ppl.sample("b", lg_step.scan(T)(a[0], None))


@ppl.gen
def choice_after(T):
    x = ppl.sample("steps", lg_step.scan(T)(0.0, None))
    ppl.sample("late", dist.Normal(x[0], 1.0))


def test_errors_name_what_is_wrong():
    _, ys, observations = lg_data(T)
    with pytest.raises(ValueError, match="makes 2 outside"):
        smc.particle_filter(jax.random.key(0), two_scans, (T,), {}, 10)
    with pytest.raises(ValueError, match="makes 0"):
        smc.particle_filter(jax.random.key(0), no_scan, (), {}, 10)
    with pytest.raises(ppl.AddressError, match="late"):
        smc.particle_filter(jax.random.key(0), choice_after, (T,), {"steps": {"y": ys}}, 10)
    with pytest.raises(ValueError, match="steps/y.*leading axis of 15"):
        smc.particle_filter(jax.random.key(0), linear_gaussian, (T,), {"steps": {"y": ys[:-1]}}, 10)
    with pytest.raises(ValueError, match="'bogus'.*systematic"):
        smc.particle_filter(jax.random.key(0), linear_gaussian, (T,), observations, 10, resample="bogus")
    with pytest.raises(ValueError, match="num_particles"):
        smc.particle_filter(jax.random.key(0), linear_gaussian, (T,), observations, 0)


@ppl.gen
def no_scan():
    ppl.sample("x", dist.Normal(0.0, 1.0))


SHARDED = textwrap.dedent(
    """
    import jax, numpy as np
    from ppl.inference import smc
    from tests.smc_models import lg_data, linear_gaussian
    assert jax.device_count() == 4, jax.devices()
    _, _, observations = lg_data(20)
    run = lambda devices: smc.particle_filter(jax.random.key(3), linear_gaussian, (20,), observations, 1000, devices=devices)
    sharded, single = run("all"), run(None)
    assert len(sharded.particles.choices["steps"]["x"].sharding.device_set) == 4
    assert bool(np.any(single.resampled)) and not bool(np.all(single.resampled))  # both branches of the cond ran
    np.testing.assert_allclose(sharded.log_marginal_likelihood, single.log_marginal_likelihood, rtol=1e-5)
    np.testing.assert_array_equal(sharded.ancestors, single.ancestors)  # the weights are summed in one order
    np.testing.assert_allclose(sharded.particles.choices["steps"]["x"], single.particles.choices["steps"]["x"], rtol=1e-5, atol=1e-6)
    try:
        smc.particle_filter(jax.random.key(3), linear_gaussian, (20,), observations, 1001, devices="all")
    except ValueError as error:
        assert "num_particles=1001" in str(error), error
    else:
        raise AssertionError("no error for 1001 particles on 4 devices")

    from tests.test_smc_tempered import OBSERVED, bimodal
    for options in ({}, {"waste_free": 8, "kernel": "mala"}):  # 1024 / 8 = 128 starts, split 4 ways too
        run = lambda devices: smc.tempered(jax.random.key(5), bimodal, (), {"y": OBSERVED}, 1024, max_num_steps=40,
                                           devices=devices, **options)
        sharded, single = run("all"), run(None)
        assert len(sharded.particles.choices["mu"].sharding.device_set) == 4
        assert int(sharded.num_steps) == int(single.num_steps) >= 2
        np.testing.assert_allclose(sharded.log_marginal_likelihood, single.log_marginal_likelihood, rtol=1e-6)
        np.testing.assert_allclose(sharded.temperatures, single.temperatures, rtol=1e-6)
        np.testing.assert_allclose(sharded.positions, single.positions, rtol=1e-5, atol=1e-6)
    try:
        smc.tempered(jax.random.key(5), bimodal, (), {"y": OBSERVED}, 1000, waste_free=8, devices="all")
    except ValueError as error:
        assert "= 125 starts" in str(error), error
    else:
        raise AssertionError("no error for 125 waste-free starts on 4 devices")

    import ppl
    from ppl import dist
    from ppl.inference import mcmc

    @ppl.gen
    def walk(T):
        x = 0.0
        for t in range(T):
            x = ppl.sample(f"x{t}", dist.Normal(x, 1.0))
            ppl.sample(f"y{t}", dist.Normal(x, 0.5))

    ys = {"y0": 0.4, "y1": 1.3, "y2": 0.9}
    def program(devices):  # every building block once, with their defaults
        keys = jax.random.split(jax.random.key(8), 4)
        particles = smc.init(keys[0], walk, (2,), {k: ys[k] for k in ("y0", "y1")}, 1000, devices=devices)
        particles, first = smc.resample(keys[1], particles, ess_threshold=0.9)
        particles = smc.extend(keys[2], particles, walk, (3,), ys)
        particles, rate = smc.rejuvenate(keys[3], particles, mcmc.mh(walk, ["x2"]), num_steps=2)
        changed = smc.change(particles, walk, (3,), {"y2": 1.1})
        particles, second = smc.resample(keys[1], changed)
        return particles, first, second, rate, changed
    sharded, single = program("all"), program(None)
    assert len(sharded[0].traces.choices["x2"].sharding.device_set) == 4
    assert sharded[4].log_weights.sharding.is_fully_replicated  # whole on every device: summed in one order
    np.testing.assert_array_equal(sharded[4].log_weights, single[4].log_weights)
    np.testing.assert_array_equal(sharded[1], single[1])
    np.testing.assert_array_equal(sharded[2], single[2])
    np.testing.assert_allclose(sharded[0].log_marginal_likelihood, single[0].log_marginal_likelihood, rtol=1e-6)
    np.testing.assert_allclose(sharded[3], single[3], rtol=1e-6)
    np.testing.assert_allclose(sharded[0].traces.choices["x2"], single[0].traces.choices["x2"], rtol=1e-5, atol=1e-6)
    print("ok")
    """
)


def test_sharded_filter_and_tempered_smc_equal_the_single_device_runs():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
