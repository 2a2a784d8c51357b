"""The MCMC runner's contract: compiled once, continued bit for bit, usable
inside jit, sharded like vmapped, and clear errors for bad input."""

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
from ppl.inference import mcmc
from ppl.inference.mcmc.calls import _sample_model


@ppl.gen
def model(n):
    mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    ppl.sample("y", dist.Normal(mu, scale).expand([n]))
    return mu / scale


YS = jnp.array([0.3, 1.4, 0.9, 2.2, 1.1, 0.6])
SETTINGS = dict(num_warmup=100, num_chains=2, progress=False)


def test_second_call_does_not_retrace():
    compiled = _sample_model._cache_size  # the one compiled program of mcmc.nuts / hmc / mala
    mcmc.nuts(jax.random.key(0), model, (6,), {"y": YS}, num_samples=50, **SETTINGS)
    first = compiled()
    result = mcmc.nuts(jax.random.key(1), model, (6,), {"y": YS + 1.0}, num_samples=50, **SETTINGS)
    assert compiled() == first
    assert result.samples["mu"].shape == (2, 50)
    mcmc.nuts(jax.random.key(1), model, (5,), {"y": YS[:5]}, num_samples=50, **SETTINGS)  # new shapes: one trace more
    assert compiled() == first + 1


def test_continued_run_equals_one_long_run():
    key, observations = jax.random.key(2), {"y": YS}
    whole = mcmc.nuts(key, model, (6,), observations, num_samples=200, **SETTINGS)
    first = mcmc.nuts(key, model, (6,), observations, num_samples=100, **SETTINGS)
    # the state is a pytree of arrays: save it as numpy and continue from the copy
    saved = jax.tree.map(np.asarray, first.state)
    settings = dict(SETTINGS, num_warmup=0)
    second = mcmc.nuts(key, model, (6,), observations, num_samples=100, state=saved, **settings)
    for name in ("mu", "scale"):
        joined = np.concatenate([first.samples[name], second.samples[name]], axis=1)
        np.testing.assert_array_equal(joined, whole.samples[name])
    np.testing.assert_array_equal(np.concatenate([first.stats["n_steps"], second.stats["n_steps"]], 1), whole.stats["n_steps"])
    np.testing.assert_array_equal(second.state.iteration, whole.state.iteration)


def test_inside_user_jit_thinning_and_keep():
    @jax.jit
    def posterior_mean(key, ys):
        result = mcmc.nuts(key, model, (6,), {"y": ys}, num_samples=100, thinning=2, keep=["mu"], **SETTINGS)
        return result.samples, result.retvals

    samples, retvals = posterior_mean(jax.random.key(3), YS)
    assert set(samples) == {"mu"} and samples["mu"].shape == (2, 100) and retvals.shape == (2, 100)


def test_return_values_are_computed_when_first_read():
    result = mcmc.hmc(jax.random.key(5), model, (6,), {"y": YS}, step_size=0.1, num_integration_steps=5,
                      num_samples=30, num_chains=2, progress=False)
    assert result._retvals is None  # the sampling program did not compute them
    np.testing.assert_allclose(result.retvals, result.samples["mu"] / result.samples["scale"], rtol=1e-5)
    leaves, treedef = jax.tree.flatten(result)  # once read, they travel with the pytree
    np.testing.assert_array_equal(jax.tree.unflatten(treedef, leaves)._retvals, result.retvals)


def test_hmc_without_warmup_adapts_nothing():
    result = mcmc.hmc(jax.random.key(4), model, (6,), {"y": YS}, step_size=0.05, num_integration_steps=7,
                      num_samples=20, progress=False)
    np.testing.assert_array_equal(result.stats["step_size"], np.float32(0.05))
    np.testing.assert_array_equal(result.state.inverse_mass_matrix, 1.0)
    np.testing.assert_array_equal(result.stats["n_steps"], 7)


@ppl.gen
def with_discrete():
    z = ppl.sample("z", dist.Bernoulli(0.5))
    ppl.sample("y", dist.Normal(z, 1.0))


@ppl.gen
def no_latents():
    ppl.sample("y", dist.Normal(0.0, 1.0))


@ppl.gen
def bounded():
    low = ppl.sample("low", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Uniform(low - 10.0, low - 9.0))


def test_errors_name_the_fault():
    run = lambda *a, **k: mcmc.nuts(jax.random.key(0), *a, num_warmup=10, num_samples=10, progress=False, **k)
    with pytest.raises(ppl.DiscreteLatentError, match="'z' \\(BernoulliProbs\\).*pass gibbs=\\['z'\\]"):
        run(with_discrete, (), {"y": 0.5})
    with pytest.raises(ValueError, match="no continuous latent choices"):
        run(no_latents, (), {"y": 0.5})
    with pytest.raises(ValueError, match="num_chains=0"):
        run(model, (6,), {"y": YS}, num_chains=0)
    with pytest.raises(ValueError, match="chain_method='parallel'"):
        run(model, (6,), {"y": YS}, chain_method="parallel")
    with pytest.raises(ValueError, match="adaptation='nutpie'"):
        run(model, (6,), {"y": YS}, adaptation="nutpie")
    # y = 0.5 is outside (low - 10, low - 9) for every low the initialisation can draw
    with pytest.raises(mcmc.InitializationError, match="chain\\(s\\) \\[0, 1, 2, 3\\].*'y' \\(observed\\) is -inf"):
        run(bounded, (), {"y": 0.5})
    with pytest.raises(ValueError, match="state has positions of shape \\(2, 2\\); this run needs \\(4, 2\\)"):
        state = run(model, (6,), {"y": YS}, num_chains=2).state
        run(model, (6,), {"y": YS}, state=state)


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, ppl
    from ppl import dist
    from ppl.inference import mcmc
    assert jax.device_count() == 4, jax.devices()

    @ppl.gen
    def model():
        mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
        ppl.sample("y", dist.Normal(mu, 1.0).expand([3]))

    run = lambda method: mcmc.nuts(jax.random.key(7), model, (), {"y": jnp.array([0.5, 1.0, 2.0])}, num_warmup=50,
                                   num_samples=50, num_chains=4, chain_method=method, progress=False)
    sharded, vmapped = run("sharded"), run("vmap")
    assert len(sharded.samples["mu"].sharding.device_set) == 4
    np.testing.assert_allclose(sharded.samples["mu"], vmapped.samples["mu"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sharded.stats["n_steps"], vmapped.stats["n_steps"])
    print("ok")
    """
)


def test_sharded_chains_equal_vmapped_chains():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


@ppl.gen
def row(x, slope):
    ppl.sample("y", dist.Normal(slope * x, 1.0))


@ppl.gen
def regression(xs):
    slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
    ppl.sample("rows", row.vmap(in_axes=(0, None))(xs, slope))
    return {"double": 2.0 * slope}


def test_to_arviz_and_loo_with_progress_bar(capsys):
    xs = jnp.linspace(-1.0, 1.0, 20)
    ys = 0.7 * xs + jax.random.normal(jax.random.key(0), xs.shape)
    result = mcmc.nuts(jax.random.key(5), regression, (xs,), {"rows": {"y": ys}}, num_warmup=100, num_samples=100,
                       num_chains=2, progress=True)
    assert "sampling" in capsys.readouterr().err  # the bar ran, from inside the compiled loop
    data = result.to_arviz(coords={"row": np.arange(20) * 10}, dims={"rows/y": ["row"]})
    assert data.posterior["slope"].shape == (2, 100)
    assert list(data.log_likelihood["rows/y"].dims) == ["chain", "draw", "row"]
    np.testing.assert_array_equal(data.observed_data["rows/y"].row, np.arange(20) * 10)
    np.testing.assert_allclose(data.posterior["retval/double"], 2.0 * data.posterior["slope"], rtol=1e-6)
    assert data.log_likelihood["rows/y"].shape == (2, 100, 20)  # pointwise: one observed choice per row
    np.testing.assert_allclose(data.observed_data["rows/y"], ys)
    assert set(data.sample_stats) >= {"diverging", "tree_depth", "lp"}
    import arviz

    loo = arviz.loo(data)
    assert np.isfinite(loo.elpd_loo)
    pointwise = jax.vmap(jax.vmap(lambda s: dist.Normal(s * xs, 1.0).log_prob(ys)))(result.samples["slope"])
    np.testing.assert_allclose(data.log_likelihood["rows/y"], pointwise, rtol=1e-5, atol=1e-5)


@ppl.gen
def switch_model():
    z = ppl.sample("z", dist.Bernoulli(0.3))
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(mu + 2.0 * z, 1.0))


def test_run_composed_trace_kernels_and_continue():
    """Gibbs on z and NUTS on mu (a cycle of trace kernels) through mcmc.run:
    P(z = 1 | y = 1.5) in closed form within 5 SE, stats of each part, and a
    continued run equal to one long run."""
    sweep = mcmc.cycle(
        mcmc.gibbs(switch_model, "z"),
        mcmc.on_trace(switch_model, "mu", lambda log_density: mcmc.nuts_kernel(log_density, 0.9, jnp.ones(1))),
    )
    keys = jax.random.split(jax.random.key(8), 8)
    traces = jax.vmap(lambda k: switch_model.generate(k, {"y": 1.5}, ())[0])(keys)
    states = jax.vmap(sweep.init)(traces)
    whole = mcmc.run(jax.random.key(9), sweep, states, 400, keep=["z", "mu"], progress=False)
    assert set(whole.samples) == {"z", "mu"} and whole.samples["z"].shape == (8, 400)
    assert {"0/conditional_probabilities", "1/acceptance_rate", "1/tree_depth", "diverging"} <= set(whole.stats)
    likelihood = [np.exp(-((1.5 - 2.0 * z) ** 2) / 4.0) for z in (0, 1)]
    p1 = 0.3 * likelihood[1] / (0.3 * likelihood[1] + 0.7 * likelihood[0])
    z = np.asarray(whole.samples["z"], np.float64)
    import arviz

    se = np.sqrt(p1 * (1 - p1) / float(arviz.ess(z, method="mean")))
    assert abs(z.mean() - p1) < 5 * se, (z.mean(), p1, se)
    first = mcmc.run(jax.random.key(9), sweep, states, 200, keep=["z", "mu"], progress=False)
    second = mcmc.run(jax.random.key(9), sweep, first.state, 200, keep=["z", "mu"], progress=False)
    np.testing.assert_array_equal(np.concatenate([first.samples["mu"], second.samples["mu"]], 1), whole.samples["mu"])
