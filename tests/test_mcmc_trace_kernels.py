"""Trace kernels and their composition (``ppl.inference.mcmc``), against exact references.

Stationarity: many chains start at exact posterior draws (by enumeration or
conjugacy), each kernel runs a few steps, and the chains' final states (one
independent draw per chain) are compared with the exact posterior, with
binomial / Monte Carlo standard errors (k = 4.5). Every kernel must also
move (a kernel that does nothing is stationary too). A Geweke test checks an
MH kernel with an asymmetric proposal across the prior predictive of the data.
Everything runs as one ``jax.jit(jax.vmap(...))`` over chains per kernel.
"""

import functools
import os
import subprocess
import sys
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import ppl
from ppl import dist
from ppl.inference import mcmc

K_SE = 4.5
NUM_CHAINS = 8000


@functools.partial(jax.jit, static_argnames=("kernel", "num_steps"))
def run_chains(kernel, traces, key, num_steps):
    """The final trace of each chain after ``num_steps`` steps, and every step's info."""

    def one_chain(key, trace):
        def body(state, key):
            return kernel.step(key, state)

        state, infos = jax.lax.scan(body, kernel.init(trace), jax.random.split(key, num_steps))
        return state.trace, infos

    return jax.vmap(one_chain)(jax.random.split(key, traces.log_density.shape[0]), traces)


def assert_frequencies(observed, probabilities):
    """Per-cell binomial z-scores of the frequencies of ``observed`` (cell indices)."""
    counts = np.bincount(np.asarray(observed), minlength=probabilities.size) / observed.size
    se = np.sqrt(probabilities * (1 - probabilities) / observed.size)
    z = (counts - probabilities) / se
    assert np.max(np.abs(z)) < K_SE, (counts, probabilities, z)


def assert_mean(samples, truth, what):
    samples = np.asarray(samples, np.float64)
    se = samples.std() / np.sqrt(samples.size)
    assert abs(samples.mean() - truth) < K_SE * se, (what, samples.mean(), truth, se)


# ----- a small discrete model, enumerated exactly -------------------------------------

PROBS_A = np.array([0.5, 0.3, 0.2])
PROBS_B = np.array([0.2, 0.6, 0.9])  # p(b = 1 | a)
LOGITS_C = np.array([[0.0, 1.0, -1.0], [1.5, 0.0, 0.5], [-0.5, 0.3, 0.0], [0.2, -1.0, 1.0], [0.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
Y = 0.8


@ppl.gen
def discrete_model():
    a = ppl.sample("a", dist.Categorical(jnp.asarray(PROBS_A)))
    b = ppl.sample("b", dist.Bernoulli(jnp.asarray(PROBS_B)[a]))
    c = ppl.sample("c", dist.Categorical(logits=jnp.asarray(LOGITS_C)[a + 3 * b]))
    ppl.sample("y", dist.Normal(a - 1.5 * b + 0.7 * c, 1.0))


def discrete_posterior():
    """Exact p(a, b, c | y) on the 18 cells a * 6 + b * 3 + c, from NumPy and SciPy alone."""
    log_p = np.zeros(18)
    for a in range(3):
        for b in range(2):
            for c in range(3):
                log_c = LOGITS_C[a + 3 * b] - logsumexp(LOGITS_C[a + 3 * b])
                log_p[a * 6 + b * 3 + c] = (
                    np.log(PROBS_A[a]) + np.log(PROBS_B[a] if b else 1 - PROBS_B[a]) + log_c[c]
                    + stats.norm.logpdf(Y, a - 1.5 * b + 0.7 * c, 1.0)
                )
    return np.exp(log_p - logsumexp(log_p))


def cell(choices):
    return choices["a"] * 6 + choices["b"] * 3 + choices["c"]


def exact_discrete_traces(seed, num):
    probabilities = discrete_posterior()
    cells = np.random.default_rng(seed).choice(18, size=num, p=probabilities)
    values = {"a": cells // 6, "b": (cells // 3) % 2, "c": cells % 3}
    make = lambda a, b, c: discrete_model.generate(jax.random.key(0), {"a": a, "b": b, "c": c, "y": Y}, ())[0]
    return jax.jit(jax.vmap(make))(*(jnp.asarray(values[n], jnp.int32) for n in "abc")), probabilities


@ppl.gen
def shift_proposal(trace):
    """Asymmetric: a' and c' drawn from tables indexed by the current a and c."""
    a, c = trace.choices["a"], trace.choices["c"]
    ppl.sample("a", dist.Categorical(logits=jnp.array([[0.0, 1.0, 2.0], [2.0, 0.0, 0.5], [1.0, -1.0, 0.0]])[a]))
    ppl.sample("c", dist.Categorical(logits=jnp.array([[0.0, 0.5, 1.5], [0.0, 0.0, -1.0], [1.0, 2.0, 0.0]])[c]))


@ppl.gen
def direction(trace):
    """The auxiliary choice of the discrete involution; its law depends on a."""
    ppl.sample("forward", dist.Bernoulli(jnp.array([0.2, 0.5, 0.7])[trace.choices["a"]]))


def rotate_and_flip(choices, auxiliary):
    """(a, b, d) -> (a +- 1 mod 3, 1 - b, 1 - d): + when d = 1, - when d = 0; an involution."""
    forward = auxiliary["forward"]
    a = (choices["a"] + jnp.where(forward == 1, 1, 2)) % 3
    return {"a": a, "b": 1 - choices["b"]}, {"forward": 1 - forward}


DISCRETE_KERNELS = {
    "mh_prior": mcmc.mh(discrete_model, ["a", "b"]),
    "mh_proposal": mcmc.mh(discrete_model, proposal=shift_proposal),
    "gibbs": mcmc.gibbs(discrete_model, "a"),
    "involutive": mcmc.involutive(discrete_model, direction, rotate_and_flip),
    "cycle": mcmc.cycle(*(mcmc.gibbs(discrete_model, n) for n in "abc")),
    "mixture": mcmc.mixture([mcmc.gibbs(discrete_model, "c"), mcmc.mh(discrete_model, proposal=shift_proposal)], [0.3, 0.7]),
}


@pytest.mark.parametrize("name", list(DISCRETE_KERNELS))
def test_stationary_on_the_exact_discrete_posterior(name):
    traces, probabilities = exact_discrete_traces(seed=1, num=NUM_CHAINS)
    final, _ = run_chains(DISCRETE_KERNELS[name], traces, jax.random.key(2), num_steps=5)
    assert_frequencies(cell(final.choices), probabilities)
    moved = np.mean(np.asarray(cell(final.choices) != cell(traces.choices)))
    assert moved > 0.2, moved
    assert np.all(np.asarray(final.choices["y"]) == np.float32(Y))  # the observation stays
    assess = jax.vmap(lambda c: discrete_model.assess(c, ())[0])(final.choices)
    np.testing.assert_allclose(final.log_density, assess, rtol=1e-5, atol=1e-5)


# ----- vectorised Gibbs on a mixture ---------------------------------------------------

MEANS = np.array([-2.0, 0.5, 3.0])
WEIGHTS = np.array([0.5, 0.2, 0.3])
DATA = np.array([-1.0, 0.0, 1.2, 2.0, 4.0, -3.0])


@ppl.gen
def datum(means, weights):
    z = ppl.sample("z", dist.Categorical(weights))
    ppl.sample("y", dist.Normal(means[z], 1.0))


@ppl.gen
def mixture_model(weights):
    means = ppl.sample("means", dist.Normal(0.0, 3.0).expand([3]))
    ppl.sample("data", datum.repeat(DATA.size)(means, weights))


def test_vectorised_gibbs_draws_each_datum_from_its_exact_conditional():
    observations = {"means": jnp.asarray(MEANS, jnp.float32), "data": {"y": jnp.asarray(DATA, jnp.float32)}}
    trace, _ = mixture_model.generate(jax.random.key(0), observations, (jnp.asarray(WEIGHTS, jnp.float32),))
    kernel = mcmc.gibbs(mixture_model, "data/z")
    step = jax.jit(jax.vmap(lambda key: kernel.step(key, kernel.init(trace))))
    states, infos = step(jax.random.split(jax.random.key(1), NUM_CHAINS))
    log_p = np.log(WEIGHTS) + stats.norm.logpdf(DATA[:, None], MEANS[None, :], 1.0)  # (data, K)
    exact = np.exp(log_p - logsumexp(log_p, axis=1, keepdims=True))
    np.testing.assert_allclose(infos.conditional_probabilities[0], exact, atol=1e-5)
    z = np.asarray(states.trace.choices["data"]["z"])
    for i in range(DATA.size):
        assert_frequencies(z[:, i], exact[i])
    assess = jax.vmap(lambda c: mixture_model.assess(c, trace.args)[0])(states.trace.choices)
    np.testing.assert_allclose(states.trace.log_density, assess, rtol=1e-5)


# ----- on_trace: a position kernel on the continuous block, Gibbs on the switch -------


class RWMState(NamedTuple):
    position: Any
    log_density: Any


class RWMInfo(NamedTuple):
    acceptance_rate: Any
    is_accepted: Any


def random_walk_metropolis(scale):
    """``make_kernel`` for ``on_trace``: Gaussian random-walk Metropolis on R^n."""

    def make_kernel(log_density_fn):
        def step(key, state):
            move_key, accept_key = jax.random.split(key)
            position = state.position + scale * jax.random.normal(move_key, state.position.shape, state.position.dtype)
            log_density = log_density_fn(position)
            log_alpha = log_density - state.log_density
            accept = jnp.log(jax.random.uniform(accept_key)) < log_alpha
            new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), RWMState(position, log_density), state)
            return new, RWMInfo(jnp.exp(jnp.minimum(log_alpha, 0.0)), accept)

        return mcmc.Kernel(lambda position: RWMState(position, log_density_fn(position)), step)

    return make_kernel


SWITCH_Y = np.array([1.9, 0.7, 2.4, 1.1, 1.6])
COUNTS = np.array([3, 5, 2, 4])


@ppl.gen
def switch_model():
    switch = ppl.sample("switch", dist.Bernoulli(0.3))
    mu = ppl.sample("mu", dist.Normal(0.0, 2.0))
    rate = ppl.sample("rate", dist.Gamma(2.0, 1.0))
    ppl.sample("y", dist.Normal(mu + 1.5 * switch, 1.0).expand([SWITCH_Y.size]))
    ppl.sample("counts", dist.Poisson(rate).expand([COUNTS.size]))


def switch_posterior():
    """p(switch | y), the normal posterior of mu given the switch, and the Gamma posterior of the rate."""
    n = SWITCH_Y.size
    covariance = np.eye(n) + 4.0 * np.ones((n, n))
    log_p = np.array([np.log(p) + stats.multivariate_normal.logpdf(SWITCH_Y, 1.5 * s * np.ones(n), covariance) for s, p in ((0, 0.7), (1, 0.3))])
    p_switch = np.exp(log_p - logsumexp(log_p))
    variance = 1.0 / (1.0 / 4.0 + n)
    means = np.array([variance * np.sum(SWITCH_Y - 1.5 * s) for s in (0, 1)])
    return p_switch, means, variance, (2.0 + COUNTS.sum(), 1.0 + COUNTS.size)


def test_on_trace_with_gibbs_is_stationary_on_the_exact_posterior():
    p_switch, means, variance, (shape, rate_rate) = switch_posterior()
    rng = np.random.default_rng(3)
    switch = rng.choice(2, size=NUM_CHAINS, p=p_switch)
    mu = rng.normal(means[switch], np.sqrt(variance))
    rate = rng.gamma(shape, 1.0 / rate_rate, size=NUM_CHAINS)
    data = {"y": jnp.asarray(SWITCH_Y, jnp.float32), "counts": jnp.asarray(COUNTS, jnp.float32)}
    make = lambda s, m, r: switch_model.generate(jax.random.key(0), {"switch": s, "mu": m, "rate": r, **data}, ())[0]
    traces = jax.jit(jax.vmap(make))(jnp.asarray(switch, jnp.int32), jnp.asarray(mu, jnp.float32), jnp.asarray(rate, jnp.float32))
    block = mcmc.on_trace(switch_model, ["mu", "rate"], random_walk_metropolis(0.5))
    kernel = mcmc.cycle(mcmc.gibbs(switch_model, "switch"), block)
    final, infos = run_chains(kernel, traces, jax.random.key(4), num_steps=15)
    assert float(jnp.mean(infos.infos[1].info.acceptance_rate)) > 0.2
    mu_final, rate_final = np.asarray(final.choices["mu"]), np.asarray(final.choices["rate"])
    assert_frequencies(np.asarray(final.choices["switch"]), p_switch)
    assert_mean(mu_final, p_switch @ means, "E[mu]")
    assert_mean((mu_final - p_switch @ means) ** 2, variance + p_switch @ (means - p_switch @ means) ** 2, "Var[mu]")
    assert_mean(rate_final, shape / rate_rate, "E[rate]")
    assert_mean((rate_final - shape / rate_rate) ** 2, shape / rate_rate**2, "Var[rate]")
    assert np.mean(np.abs(rate_final - rate)) > 0.2  # it moved


# ----- involutive MCMC with a non-trivial Jacobian ---------------------------------------


@ppl.gen
def gamma_poisson():
    rate = ppl.sample("rate", dist.Gamma(3.0, 2.0))
    ppl.sample("counts", dist.Poisson(rate).expand([COUNTS.size]))


@ppl.gen
def log_scale(trace):
    ppl.sample("u", dist.Normal(0.0, 0.4))


def scale_move(choices, auxiliary):
    """(rate, u) -> (rate exp(u), -u): |det J| = exp(u)."""
    return {"rate": choices["rate"] * jnp.exp(auxiliary["u"])}, {"u": -auxiliary["u"]}


def test_involutive_scale_move_is_stationary_on_the_gamma_posterior():
    shape, rate_rate = 3.0 + COUNTS.sum(), 2.0 + COUNTS.size
    start = np.random.default_rng(5).gamma(shape, 1.0 / rate_rate, size=NUM_CHAINS)
    make = lambda r: gamma_poisson.generate(jax.random.key(0), {"rate": r, "counts": jnp.asarray(COUNTS, jnp.float32)}, ())[0]
    traces = jax.jit(jax.vmap(make))(jnp.asarray(start, jnp.float32))
    final, infos = run_chains(mcmc.involutive(gamma_poisson, log_scale, scale_move), traces, jax.random.key(6), num_steps=20)
    rate = np.asarray(final.choices["rate"])
    assert float(jnp.mean(infos.acceptance_rate)) > 0.3
    assert_mean(rate, shape / rate_rate, "E[rate]")
    assert_mean((rate - shape / rate_rate) ** 2, shape / rate_rate**2, "Var[rate]")


# ----- Geweke: successive-conditional against marginal-conditional simulation ---------------


@ppl.gen
def geweke_model():
    theta = ppl.sample("theta", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(theta, 0.7).expand([2]))


@ppl.gen
def autoregressive(trace):
    """Asymmetric: q(theta' | theta) = N(0.5 theta + 0.3, 0.8)."""
    ppl.sample("theta", dist.Normal(0.5 * trace.choices["theta"] + 0.3, 0.8))


def geweke_statistics(choices):
    theta, y = choices["theta"], jnp.mean(choices["y"], axis=-1)
    return jnp.stack([theta, theta**2, theta * y, y**2, theta**3], axis=-1)


def geweke_z_scores(seed, num_chains=NUM_CHAINS, num_steps=10):
    """Two-sample z-scores of the test functions: chains alternating the MH kernel
    (theta given y) with fresh data given theta (y | theta from the model), from
    joint draws, against fresh joint draws. A kernel that keeps p(theta | y) for
    every y keeps the joint."""
    kernel = mcmc.mh(geweke_model, proposal=autoregressive)
    joint_key, chains_key, reference_key = jax.random.split(jax.random.key(seed), 3)
    simulate = jax.vmap(lambda key: geweke_model.simulate(key, ()))

    def successive(key, trace):
        def body(trace, key):
            kernel_key, data_key = jax.random.split(key)
            trace = kernel.step(kernel_key, kernel.init(trace))[0].trace
            return geweke_model.regenerate(data_key, trace, ppl.select("y"), trace.args)[0], None

        return jax.lax.scan(body, trace, jax.random.split(key, num_steps))[0]

    starts = simulate(jax.random.split(joint_key, num_chains))
    chains = jax.jit(jax.vmap(successive))(jax.random.split(chains_key, num_chains), starts)
    successive_g = np.asarray(geweke_statistics(chains.choices), np.float64)
    marginal_g = np.asarray(geweke_statistics(jax.jit(simulate)(jax.random.split(reference_key, num_chains)).choices), np.float64)
    se = np.sqrt(successive_g.var(0) / num_chains + marginal_g.var(0) / num_chains)
    return (successive_g.mean(0) - marginal_g.mean(0)) / se


def test_geweke_mh_with_an_asymmetric_proposal():
    z = geweke_z_scores(seed=7)
    assert np.max(np.abs(z)) < K_SE, z


# ----- errors ----------------------------------------------------------------------------


@ppl.gen
def bounded(high):
    k = ppl.sample("k", dist.DiscreteUniform(0, high))
    ppl.sample("y", dist.Normal(k, 1.0))


def test_errors_name_the_problem():
    trace, _ = discrete_model.generate(jax.random.key(0), {"y": Y}, ())
    step = lambda kernel: kernel.step(jax.random.key(1), kernel.init(trace))
    with pytest.raises(TypeError, match="exactly one of them; neither given"):
        mcmc.mh(discrete_model)
    with pytest.raises(TypeError, match="exactly one of them; both given"):
        mcmc.mh(discrete_model, "a", proposal=shift_proposal)
    misspelt = ppl.gen(lambda trace: ppl.sample("aa", dist.Categorical(jnp.ones(3) / 3)))
    with pytest.raises(ppl.AddressError, match=r"(?s)proposal's choices name .*'aa' \(did you mean 'a'\?\)"):
        step(mcmc.mh(discrete_model, proposal=misspelt))
    with pytest.raises(ppl.AddressError, match="(?s)involution's new model choices name .*'d'"):
        step(mcmc.involutive(discrete_model, direction, lambda x, u: ({"d": x["a"]}, u)))
    with pytest.raises(ppl.AddressError, match="'aa' is not a choice of the model"):
        step(mcmc.gibbs(discrete_model, "aa"))
    with pytest.raises(TypeError, match="address 'y': Normal has no finite support"):
        step(mcmc.gibbs(discrete_model, "y"))
    with pytest.raises(ValueError, match="one weight per kernel"):
        mcmc.mixture([mcmc.gibbs(discrete_model, "a")], [0.5, 0.5])


@ppl.gen
def wide_scale():
    return ppl.sample("scale", dist.HalfNormal(5.0))


@ppl.gen
def maybe_outlier():
    outlier = ppl.sample("outlier", dist.Bernoulli(0.1))
    scale = ppl.sample("scale", ppl.cond(outlier, wide_scale, ppl.gen(lambda: 0.1)))
    ppl.sample("y", dist.Normal(0.0, scale))


@ppl.gen
def coin():
    return ppl.sample("z", dist.Bernoulli(0.3))


@ppl.gen
def coupled_coins():
    coins = ppl.sample("coins", coin.repeat(4)())
    ppl.sample("total", dist.Normal(jnp.sum(coins), 1.0))


def test_errors_of_supports_and_blocks():
    trace, _ = switch_model.generate(jax.random.key(0), {"y": jnp.asarray(SWITCH_Y), "counts": jnp.asarray(COUNTS, jnp.float32)}, ())
    step = lambda kernel, trace=trace: kernel.step(jax.random.key(1), kernel.init(trace))
    with pytest.raises(TypeError, match="address 'counts': .* an array of shape \\(4,\\)"):
        step(mcmc.gibbs(switch_model, "counts", support=jnp.arange(10)))
    with pytest.raises(ppl.AddressError, match="selects no choice"):
        step(mcmc.on_trace(switch_model, "sigma", random_walk_metropolis(0.5)))
    with pytest.raises(TypeError, match="'switch' .* discrete"):
        step(mcmc.on_trace(switch_model, ["switch", "mu"], random_walk_metropolis(0.5)))
    outlier_trace, _ = maybe_outlier.generate(jax.random.key(0), {"y": 0.3}, ())
    with pytest.raises(TypeError, match="gibbs on 'outlier': the choices 'scale/scale' change with its value"):
        step(mcmc.gibbs(maybe_outlier, "outlier"), outlier_trace)
    coupled_trace, _ = coupled_coins.generate(jax.random.key(0), {"total": 2.0}, ())
    with pytest.raises(TypeError, match="elements of 'coins/z': the density of 'total', outside their vmap, depends on them"):
        step(mcmc.gibbs(coupled_coins, "coins/z"), coupled_trace)
    bounded_trace, _ = bounded.generate(jax.random.key(0), {"y": 2.5}, (jnp.asarray(3),))
    with pytest.raises(TypeError, match="address 'k': the support of DiscreteUniform depends on traced parameters"):
        step(mcmc.gibbs(bounded, "k"), bounded_trace)
    _, info = step(mcmc.gibbs(bounded, "k", support=jnp.arange(4)), bounded_trace)
    exact = np.exp(stats.norm.logpdf(2.5, np.arange(4), 1.0))
    np.testing.assert_allclose(info.conditional_probabilities, exact / exact.sum(), rtol=1e-5)


# ----- compilation and float64 -------------------------------------------------------


def test_a_chain_compiles_once():
    kernel = DISCRETE_KERNELS["mh_proposal"]
    traced = []
    counted = mcmc.Kernel(kernel.init, lambda key, state: (traced.append(1), kernel.step(key, state))[1])
    for seed in (10, 11):
        traces, _ = exact_discrete_traces(seed, num=16)
        run_chains(counted, traces, jax.random.key(seed), num_steps=3)
    assert len(traced) == 1


@ppl.gen
def mu_walk(trace):
    ppl.sample("mu", dist.Normal(trace.choices["mu"], 0.3))


def float64_checks():
    """One step of every kernel on float64 traces: values and densities stay float64, densities exact."""
    data = {"y": jnp.asarray(SWITCH_Y), "counts": jnp.asarray(COUNTS, jnp.float64)}
    cases = [
        (switch_model, switch_model.generate(jax.random.key(0), data, ())[0], mcmc.cycle(
            mcmc.gibbs(switch_model, "switch"), mcmc.on_trace(switch_model, ["mu", "rate"], random_walk_metropolis(0.5)),
            mcmc.mh(switch_model, "mu"), mcmc.mh(switch_model, proposal=mu_walk))),
        (gamma_poisson, gamma_poisson.generate(jax.random.key(0), {"counts": data["counts"]}, ())[0],
         mcmc.involutive(gamma_poisson, log_scale, scale_move)),
        (mixture_model, mixture_model.generate(jax.random.key(0), {"data": {"y": jnp.asarray(DATA)}}, (jnp.asarray(WEIGHTS),))[0],
         mcmc.gibbs(mixture_model, "data/z")),
    ]
    for model, trace, kernel in cases:
        state, _ = jax.jit(kernel.step)(jax.random.key(1), kernel.init(trace))
        floats = [x for x in jax.tree.leaves(state.trace.choices) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and all(x.dtype == jnp.float64 for x in floats), [x.dtype for x in floats]
        assert state.trace.log_density.dtype == jnp.float64
        np.testing.assert_allclose(state.trace.log_density, model.assess(state.trace.choices, trace.args)[0], rtol=1e-12)


def test_kernels_keep_float64():
    if jax.config.jax_enable_x64:
        return float64_checks()
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", f"{__file__}::test_kernels_keep_float64"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
