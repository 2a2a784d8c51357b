"""ppl.inference.calibration: each check passes a right algorithm and fails
a planted bug, on small conjugate models whose posteriors are exact.

Every check says pass or fail at a family-wise alpha = 0.05. The seeds are
fixed, so a test passes or fails the same way every time; how often each
check would pass or fail over seeds (its false-alarm rate on the right
algorithm, its power on the bug) was measured outside the suite by running
each ``*_check(seed)`` below for seeds 0 to 199 (0 to 99 for NUTS) and
counting the failures, and is stated in each test. The rates are those of the checks at these sizes; a check with a
5% false-alarm rate fails one seed in twenty, which is why the seeds are
fixed, not tuned: seed 0 throughout, except where a test says otherwise.
"""

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
from ppl.inference import calibration, mcmc
from ppl.inference.calibration.simulate import _warnings
from ppl.inference.mcmc.trace_kernels import MHState, metropolis_accept

NUM_SIMULATIONS, NUM_DRAWS = 200, 100
PNG = b"\x89PNG\r\n\x1a\n"

# ----- a normal mean: mu ~ N(0, 1), four y ~ N(mu, 1); posterior N(sum y / 5, 1 / 5) ---------------


@ppl.gen
def normal_mean():
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(mu, 1.0).expand([4]))


def exact_normal_mean(key, observations):
    mean, sd = jnp.sum(observations["y"]) / 5.0, 1.0 / jnp.sqrt(5.0)
    return {"mu": mean + sd * jax.random.normal(key, (NUM_DRAWS,))}


def importance_with(num_particles):
    def infer(key, observations):
        result = ppl.inference.importance(key, normal_mean, (), observations, num_particles)
        return result.resample(jax.random.fold_in(key, 1), NUM_DRAWS)  # a ppl.Trace of draws

    return infer


# With 1000 particles the same check (``sbc_check(seed, importance_with(1000))``, measured
# outside the suite to save its compilation here) fails 3.0% of 200 seeds: a right algorithm.
few_particles = importance_with(5)


def sbc_check(seed, infer_fn):
    return calibration.sbc(jax.random.key(seed), normal_mean, (), ["y"], infer_fn, NUM_SIMULATIONS, NUM_DRAWS,
                           progress=False)  # fmt: skip


def test_sbc_passes_exact_posterior_draws():
    """False alarms: 4.0% of 200 seeds (alpha 0.05); the chi-square test at 0.05: 3.5%."""
    result = sbc_check(0, exact_normal_mean)
    assert result.passed, result.summary()
    assert result.ranks.shape == (NUM_SIMULATIONS, 1) and result.ranks.min() >= 0 and result.ranks.max() <= NUM_DRAWS
    assert result.chi_square_p_values[0] > 0.05


def test_sbc_fails_importance_sampling_with_too_few_particles():
    """Five particles resampled into 100 draws: the draws are a handful of
    prior points, too narrow. Power: 100% of 200 seeds (the chi-square test: 100% too)."""
    result = sbc_check(0, few_particles)
    assert not result.passed and result.ecdf_p_values[0] < 1e-3, result.summary()


# ----- a sum: theta ~ N(0, I_2), y ~ N(theta_1 + theta_2, 0.3); posterior correlation -0.92 ---------

SUM_NOISE = 0.3


@ppl.gen
def noisy_sum():
    theta = ppl.sample("theta", dist.Normal(0.0, 1.0).expand([2]))
    ppl.sample("y", dist.Normal(theta.sum(), SUM_NOISE))


def sum_posterior(y):
    precision = 1.0 / SUM_NOISE**2
    covariance = jnp.eye(2) - precision / (1.0 + 2.0 * precision) * jnp.ones((2, 2))
    return covariance @ jnp.full(2, precision * y), covariance


def exact_sum(key, observations):
    mean, covariance = sum_posterior(observations["y"])
    return {"theta": mean + jax.random.normal(key, (NUM_DRAWS, 2)) @ jnp.linalg.cholesky(covariance).T}


def independent_marginals(key, observations):
    """The planted bug: each theta_i from its exact marginal, independently (the
    correlation dropped): the best a mean-field family can do for the marginals."""
    mean, covariance = sum_posterior(observations["y"])
    return {"theta": mean + jax.random.normal(key, (NUM_DRAWS, 2)) * jnp.sqrt(jnp.diag(covariance))}


def joint_check(seed, infer_fn):
    simulations = calibration.simulate(jax.random.key(seed), noisy_sum, (), ["y"], infer_fn, NUM_SIMULATIONS, NUM_DRAWS,
                                       progress=False)  # fmt: skip
    test_key = jax.random.key(seed + 1)
    return calibration.sbc_test(simulations, test_key), calibration.tarp_test(simulations, test_key)


def test_sbc_and_tarp_pass_the_exact_joint_posterior():
    """False alarms over 200 seeds: SBC 3.0%, TARP 6.5% (13 of 200; alpha 0.05)."""
    sbc, tarp = joint_check(0, exact_sum)
    assert sbc.passed, sbc.summary()
    assert tarp.passed, tarp.summary()


def test_tarp_fails_independent_marginals_where_sbc_passes():
    """Exact marginals, no correlation: per-scalar SBC cannot see it (its
    rate is its false-alarm rate: 3.0% of 200 seeds); TARP fails 95.5% of them."""
    sbc, tarp = joint_check(0, independent_marginals)
    assert sbc.passed, sbc.summary()
    assert not tarp.passed, tarp.summary()
    assert tarp.max_deviation > 0.1  # the balls around a centre are too often empty or full


# ----- Geweke: an MH kernel with an asymmetric proposal -----------------------------------------------


@ppl.gen
def geweke_model():
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(mu, 0.7).expand([2]))


@ppl.gen
def shrinking_walk(trace):
    """Asymmetric: q(mu' | mu) = N(0.5 mu + 0.3, 0.8)."""
    ppl.sample("mu", dist.Normal(0.5 * trace.choices["mu"] + 0.3, 0.8))


def mh_without_hastings_correction(model, proposal):
    """The planted bug: log alpha = log p(new) - log p(old), the proposal's
    ratio q(old | new) / q(new | old) forgotten."""

    def step(key, state):
        forward_key, update_key, accept_key = jax.random.split(key, 3)
        trace = state.trace
        forward = proposal.simulate(forward_key, (trace,))
        proposed, _, _ = model.update(update_key, trace, forward.choices, trace.args)
        log_alpha = proposed.log_density - trace.log_density
        trace, info = metropolis_accept(accept_key, log_alpha, proposed, trace)
        return MHState(trace), info

    return mcmc.Kernel(MHState, step)


right_mh = mcmc.mh(geweke_model, proposal=shrinking_walk)
wrong_mh = mh_without_hastings_correction(geweke_model, shrinking_walk)
GEWEKE_CHAINS, GEWEKE_STEPS = 1000, 20


def geweke_check(seed, kernel):
    return calibration.geweke(jax.random.key(seed), geweke_model, (), ["y"], kernel, GEWEKE_CHAINS, GEWEKE_STEPS,
                              progress=False)  # fmt: skip


def test_geweke_passes_mh_with_the_hastings_correction():
    """False alarms: 4.5% of 200 seeds (alpha 0.05 over 4 statistics)."""
    result = geweke_check(0, right_mh)
    assert result.passed, result.summary()
    # The successive chain is autocorrelated (an ESS of about 2200 of its 20000 draws): its
    # standard error must use the ESS, or z-scores come out 3 times too large (measured: a
    # version with sd / sqrt(draws) still passes seed 0, so this checks the formula itself).
    assert np.all(result.successive_ess < 0.25 * GEWEKE_CHAINS * GEWEKE_STEPS), result.successive_ess
    successive_sd = result.successive_se * np.sqrt(result.successive_ess)
    np.testing.assert_allclose(successive_sd, result.marginal_se * np.sqrt(result.num_marginal), rtol=0.1)
    assert result.names == ["mu", "mu^2", "mean(data)", "mu*mean(data)"]


def test_geweke_fails_mh_that_forgets_the_hastings_correction():
    """Power: 100% of 200 seeds; the chain drifts towards the proposal's pull
    (mu's mean moves from 0)."""
    result = geweke_check(0, wrong_mh)
    assert not result.passed, result.summary()
    assert abs(result.z_scores[0]) > 10, result.summary()


# ----- NUTS: every check passes ----------------------------------------------------------------------


NUTS_DRAWS = 50


def nuts_posterior(key, observations):
    return mcmc.nuts(key, normal_mean, (), observations, num_warmup=200, num_samples=200, num_chains=2, progress=False)


def nuts_sbc_check(seed):
    """SBC and TARP of ``mcmc.nuts`` (an ``MCMCResult``: 2 chains x 200 draws,
    thinned to 50: NUTS on a 1-D normal keeps an ESS of about half its draws),
    vmapped over 200 simulations, warmup included."""
    simulations = calibration.simulate(jax.random.key(seed), normal_mean, (), ["y"], nuts_posterior, NUM_SIMULATIONS,
                                       NUTS_DRAWS, progress=False)  # fmt: skip
    test_key = jax.random.key(seed + 1)
    return calibration.sbc_test(simulations, test_key), calibration.tarp_test(simulations, test_key)


nuts_on_mu = mcmc.on_trace(geweke_model, "mu", lambda log_density_fn: mcmc.nuts_kernel(log_density_fn, 0.9, jnp.ones(1)))


def nuts_geweke_check(seed):
    return geweke_check(seed, nuts_on_mu)


def test_nuts_passes_sbc_tarp_and_geweke():
    """False alarms over 100 seeds: SBC 4%, TARP 4% (the chi-square test 3%); Geweke's test of a NUTS
    kernel (fixed step size, on the block mu: ``nuts_geweke_check``): 7% (7 of
    100: within two standard errors of 5%)."""
    sbc, tarp = nuts_sbc_check(0)
    assert sbc.passed, sbc.summary()
    assert tarp.passed, tarp.summary()
    geweke = nuts_geweke_check(0)
    assert geweke.passed, geweke.summary()
    ess = sbc.simulations.ess
    assert ess.shape == (NUM_SIMULATIONS, 1) and np.mean(ess[:, 0] >= NUTS_DRAWS) > 0.95, np.percentile(ess, [0, 5, 50])


# ----- how the draws are taken -------------------------------------------------------------------------


def not_traceable(key, observations):
    """An inference function that needs concrete values (as ``vi.fit`` does): no vmap."""
    draws = exact_normal_mean(key, observations)
    return {"mu": jnp.asarray(np.asarray(draws["mu"]))}


def test_an_untraceable_infer_fn_runs_one_simulation_at_a_time_with_the_same_draws():
    args = (jax.random.key(3), normal_mean, (), ["y"])
    vmapped = calibration.simulate(*args, exact_normal_mean, 6, NUM_DRAWS, progress=False)
    one_by_one = calibration.simulate(*args, not_traceable, 6, NUM_DRAWS, progress=False)
    np.testing.assert_allclose(one_by_one.draws, vmapped.draws, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one_by_one.truths, vmapped.truths)
    with pytest.raises(jax.errors.TracerArrayConversionError):
        calibration.simulate(*args, not_traceable, 6, NUM_DRAWS, vectorize=True, progress=False)


def test_a_low_ess_is_a_warning():
    """Chains whose ESS is below num_draws leave the thinned draws autocorrelated
    (the ranks of a right sampler then pile up at the ends): the simulations say so."""
    draws, ess = np.zeros((8, 20, 1)), np.full((8, 1), 50.0)
    assert _warnings(draws, ess, 20) == ()
    ess[[2, 5]] = 12.0
    draws[3, 0, 0] = np.nan
    not_finite, low_ess = _warnings(draws, ess, 20)
    assert not_finite == "infer_fn returned draws that are not finite in 1 of 8 simulations"
    assert low_ess.startswith("in 2 of 8 simulations the chains' ESS (smallest 12) is below num_draws=20"), low_ess
    assert calibration.draws.thinned_indices(400, 20).tolist() == list(range(10, 400, 20))  # 2 chains x 200: every 20th


# ----- results read and plot ----------------------------------------------------------------------------


def test_summaries_and_plots(tmp_path):
    sbc, tarp = joint_check(1, independent_marginals)
    text = sbc.summary()
    assert text.splitlines()[0].startswith("SBC: 200 simulations x 100 draws, ")
    assert "theta[0]" in text and "theta[1]" in text and "ecdf_p" in text and "chi2_p" in text
    assert repr(tarp).startswith("TARP: 200 simulations x 100 draws of 2 latent scalars jointly, ")
    geweke = geweke_check(1, wrong_mh)
    assert "FAIL" in geweke.summary() and "mu*mean(data)" in geweke.summary()
    for name, result in [("sbc", sbc), ("tarp", tarp), ("geweke", geweke)]:
        result.plot(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG, name
    assert len(sbc.plot().axes) == 2  # one panel per scalar


# ----- bad input -----------------------------------------------------------------------------------------


def test_errors_name_the_argument_at_fault():
    key = jax.random.key(0)
    run = lambda observed=("y",), infer_fn=exact_normal_mean, n=10, **kw: calibration.simulate(
        key, normal_mean, (), list(observed), infer_fn, n, NUM_DRAWS, progress=False, **kw)  # fmt: skip
    with pytest.raises(ppl.AddressError, match=r"observed names 'ys' \(did you mean 'y'\?\), which the model never samples"):
        run(observed=["ys"])
    with pytest.raises(ValueError, match="covers every choice of the model: nothing is left latent"):
        run(observed=["y", "mu"])
    with pytest.raises(ValueError, match="num_simulations=1: need an integer >= 2"):
        run(n=1)
    with pytest.raises(ppl.AddressError, match="infer_fn's draws lack the latent choice 'mu'"):
        run(infer_fn=lambda k, obs: {"m": jnp.zeros(NUM_DRAWS)})
    with pytest.raises(ValueError, match=r"draws of 'mu' have shape \(100, 2, 3\); expected \(num_draws, \*\(\)\)"):
        run(infer_fn=lambda k, obs: {"mu": jnp.zeros((NUM_DRAWS, 2, 3))})
    with pytest.raises(ValueError, match="infer_fn returned 50 draws .*num_draws=100 needs at least that many"):
        run(infer_fn=lambda k, obs: {"mu": jnp.zeros(50)})
    with pytest.raises(TypeError, match=r"infer_fn returned an array of shape \(100,\); it must return posterior draws"):
        run(infer_fn=lambda k, obs: jnp.zeros(NUM_DRAWS))
    with pytest.raises(TypeError, match="observed=3"):
        calibration.simulate(key, normal_mean, (), 3, exact_normal_mean, 10, NUM_DRAWS)
    with pytest.raises(ValueError, match="vectorize='yes'"):
        run(vectorize="yes")


@ppl.gen
def data_then_latent():
    y = ppl.sample("y", dist.Normal(0.0, 1.0))
    ppl.sample("z", dist.Normal(y, 1.0))


def test_geweke_refuses_data_that_other_choices_depend_on():
    kernel = mcmc.mh(data_then_latent, "z")
    with pytest.raises(ValueError, match=r"regenerate's weight reached .*, not 0: some choice depends on the data"):
        calibration.geweke(jax.random.key(0), data_then_latent, (), ["y"], kernel, 10, 4, progress=False)


# ----- several devices -----------------------------------------------------------------------------------

SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, ppl
    from ppl import dist
    from ppl.inference import calibration
    assert jax.device_count() == 4, jax.devices()

    @ppl.gen
    def model():
        mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ppl.sample("y", dist.Normal(mu, 1.0).expand([4]))

    def exact(key, observations):
        return {"mu": jnp.sum(observations["y"]) / 5.0 + jax.random.normal(key, (50,)) / jnp.sqrt(5.0)}

    sharded = calibration.simulate(jax.random.key(0), model, (), ["y"], exact, 10, 50, progress=False)
    one_by_one = calibration.simulate(jax.random.key(0), model, (), ["y"], exact, 10, 50, vectorize=False, progress=False)
    batched = calibration.simulate(jax.random.key(0), model, (), ["y"], exact, 10, 50, batch_size=3, progress=False)
    np.testing.assert_allclose(sharded.draws, one_by_one.draws, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched.draws, one_by_one.draws, rtol=1e-5, atol=1e-6)
    print("ok")
    """
)


def test_simulations_split_across_devices():
    """10 simulations on 4 (forced host) devices: a batch of 12, 3 per device,
    the last rows repeats cut; in batches of 3 (rounded up to 4, one per
    device: three batches); each the same draws as one simulation at a time."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
