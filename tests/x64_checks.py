"""Float64 checks, run by ``test_x64.py`` in a subprocess with
``JAX_ENABLE_X64=1`` (the flag must be set before JAX starts): results are
float64 and agree with float64 references to ~1e-12 relative. (Not collected
on its own: its name does not start with ``test_``.)"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import ppl
from ppl import dist
from ppl.inference import vi
import test_vi_objectives as objectives

pytestmark = pytest.mark.skipif(not jax.config.jax_enable_x64, reason="run by test_x64.py with JAX_ENABLE_X64=1")

RTOL = 1e-12
to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def assert_float64(tree):
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float64, leaf.dtype


@ppl.gen
def linear(xs):
    slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
    noise = ppl.sample("noise", dist.HalfNormal(2.0))
    return ppl.sample("ys", dist.Normal(slope * xs, noise))


XS = jnp.linspace(-1.0, 1.0, 7)
YS = 0.7 * XS + 0.01 * jnp.sin(40.0 * XS)


def linear_reference(slope, noise, ys):
    """log p(slope, noise, ys) with SciPy, in NumPy float64."""
    slope, noise, ys = (np.asarray(v, np.float64) for v in (slope, noise, ys))
    return (
        stats.norm.logpdf(slope, 0.0, 1.0)
        + stats.halfnorm.logpdf(noise, scale=2.0)
        + stats.norm.logpdf(ys, slope[..., None] * np.asarray(XS), noise[..., None]).sum(-1)
    )


def test_the_gfi_is_float64_and_exact():
    trace = linear.simulate(jax.random.key(0), (XS,))
    assert_float64((trace.choices, trace.log_density))
    c = trace.choices
    np.testing.assert_allclose(trace.log_density, linear_reference(c["slope"], c["noise"], c["ys"]), rtol=RTOL)
    log_density, _ = linear.assess(c, (XS,))
    np.testing.assert_allclose(log_density, trace.log_density, rtol=RTOL)
    posterior, weight = linear.generate(jax.random.key(1), {"ys": YS}, (XS,))
    assert_float64((posterior.log_density, weight))
    moved, update_weight, _ = linear.update(jax.random.key(2), posterior, {"slope": 0.3}, (XS,))
    new_slope = posterior.choices["noise"]
    expected = linear_reference(0.3, new_slope, YS) - linear_reference(posterior.choices["slope"], new_slope, YS)
    np.testing.assert_allclose(update_weight, expected, rtol=RTOL)
    _, regenerate_weight = linear.regenerate(jax.random.key(3), posterior, ppl.select("slope"), (XS,))
    assert regenerate_weight.dtype == jnp.float64


def test_importance_weights_are_the_float64_likelihood():
    result = ppl.inference.importance(jax.random.key(4), linear, (XS,), {"ys": YS}, 1000)
    assert_float64((result.log_weights, result.log_marginal_likelihood, result.particles.choices))
    c = result.particles.choices
    slope, noise = np.asarray(c["slope"]), np.asarray(c["noise"])
    likelihood = stats.norm.logpdf(np.asarray(YS), slope[:, None] * np.asarray(XS), noise[:, None]).sum(-1)
    np.testing.assert_allclose(result.log_weights, likelihood, rtol=RTOL)


OBJECTIVES = {
    "elbo": lambda: vi.elbo(objectives.model, objectives.guide),
    "stl_elbo": lambda: vi.stl_elbo(objectives.gauss_model, objectives.gauss_guide),
    "hvi": lambda: vi.hvi(objectives.model_z, objectives.joint_guide, "z", objectives.reverse),
    "iwhvi": lambda: vi.iwhvi(objectives.model_z, objectives.joint_guide, "z", objectives.reverse, 2),
    "diwhvi": lambda: vi.diwhvi(objectives.model_z, objectives.joint_guide, "z", objectives.reverse, 2, 2),
    **{name: make for name, (make, _) in objectives.DISCRETE_CASES.items()},
}


def _params(name):
    if name == "stl_elbo":
        return objectives.GAUSS_PARAMS, {"x": objectives.X_OBS}
    if "hvi" in name:
        return objectives.HVI_PARAMS, objectives.OBS
    return objectives.PARAMS, objectives.OBS


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_estimate_and_gradient_is_float64(name):
    params, observations = _params(name)
    value, grads = jax.jit(lambda k: OBJECTIVES[name]().value_and_grad_estimate(k, to64(params), to64(observations)))(
        jax.random.key(5)
    )
    assert_float64((value, grads))
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("exact_case", ["one-categorical", "categorical-then-bernoulli", "hvi"])
def test_enumerated_objectives_are_exact_to_1e12(exact_case):
    if exact_case == "hvi":
        make = lambda: vi.hvi(objectives.model_z, objectives.joint_guide, "z", objectives.reverse)
        params, exact = objectives.HVI_PARAMS, objectives.exact_diwhvi(1, 1)
    elif exact_case == "one-categorical":
        make = lambda: vi.elbo(objectives.model_z, objectives.guide_z)
        params, exact = {k: objectives.PARAMS[k] for k in ("theta", "phi")}, objectives.exact_elbo_z
    else:
        make = lambda: vi.elbo(objectives.model, objectives.guide)
        params, exact = objectives.PARAMS, objectives.enumerated(lambda lp, lq: (lp - lq)[:, 0], 1)
    params = to64(params)
    exact_value, exact_grads = jax.jit(jax.value_and_grad(exact))(params)
    value, grads = jax.jit(lambda k: make().value_and_grad_estimate(k, params, to64(objectives.OBS)))(jax.random.key(6))
    assert_float64((value, grads, exact_value))
    np.testing.assert_allclose(value, exact_value, rtol=RTOL)
    for name in params:
        np.testing.assert_allclose(grads[name], exact_grads[name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_fit_is_float64_and_reaches_the_exact_optimum():
    """An exact (enumerated) ELBO, maximised by gradient ascent: the guide's
    probabilities converge to the posterior's to float64 precision."""
    objective = vi.elbo(objectives.model_z, objectives.guide_z)
    theta = jnp.asarray(objectives.PARAMS["theta"], jnp.float64)
    params = {"theta": theta, "phi": jnp.zeros(3)}
    optimizer = optax.multi_transform({"fixed": optax.set_to_zero(), "free": optax.sgd(0.5)}, {"theta": "fixed", "phi": "free"})
    result = vi.fit(objective, params, optimizer, 3000, (to64(objectives.OBS),), key=jax.random.key(7), progress=False)
    assert_float64((result.params, result.history))
    log_joint = jax.nn.log_softmax(theta) + stats.norm.logpdf(float(objectives.X_DISCRETE), np.asarray(objectives.MU), 1.0)
    posterior = np.exp(log_joint - jax.scipy.special.logsumexp(log_joint))
    np.testing.assert_allclose(jax.nn.softmax(result.params["phi"]), posterior, rtol=1e-9)


def test_the_unconstraining_transform_is_float64_and_matches_numpyro_to_1e12():
    """Every kind of support (tests/test_unconstrain.py's model), against
    NumPyro's potential energy and its gradient, both in float64."""
    import test_unconstrain as cases

    target = cases.unconstrain(cases.supports_model, (to64(cases.DATA),), {"y": to64(cases.DATA)})
    names = {(name,): name for name, _, _ in cases.SUPPORTS_LAYOUT}
    reference = cases.numpyro_log_density(cases.numpyro_supports_model, (to64(cases.DATA),), cases.by_name(target, names))
    positions = cases.positions_of(target, n=4)
    assert positions.dtype == jnp.float64
    ours = jax.vmap(jax.value_and_grad(target.log_density))(positions)
    theirs = jax.jit(jax.vmap(jax.value_and_grad(reference)))(positions)
    assert_float64(ours)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=RTOL)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-10)
    choices, _ = target.constrain(positions[0])
    assert_float64(choices)
    np.testing.assert_allclose(target.unconstrain(choices), positions[0], rtol=1e-10, atol=1e-12)


@ppl.gen
def normal_mean():
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.sample("y", dist.Normal(mu, 1.0).expand([4]))


def test_calibration_simulations_are_float64():
    """SBC under float64: the simulated parameters and the draws stay float64,
    and the exact posterior's ranks lie in 0..num_draws."""
    from ppl.inference import calibration

    def exact(key, observations):
        return {"mu": observations["y"].sum() / 5 + jax.random.normal(key, (50,)) / jnp.sqrt(5.0)}

    result = calibration.sbc(jax.random.key(0), normal_mean, (), ["y"], exact, 20, 50, progress=False)
    assert result.simulations.truths.dtype == np.float64 and result.simulations.draws.dtype == np.float64
    assert result.ranks.min() >= 0 and result.ranks.max() <= 50


def test_svgd_and_coin_svgd_are_float64_and_match_the_reference_to_1e12():
    """The Stein force (median bandwidth included) and the coin recursion of
    tests/test_vi_svgd.py's NumPy references, a few steps, all in float64."""
    import test_vi_svgd as cases

    x0 = jax.random.uniform(jax.random.key(3), (5, 1), jnp.float64, minval=-3.0, maxval=3.0)
    gradient = jax.jit(jax.vmap(jax.grad(cases.mixture_log_density)))
    force, bandwidth = jax.jit(lambda x: vi.stein_force(vi.rbf_kernel(), x, gradient(x)))(x0)
    assert_float64((force, bandwidth))
    np.testing.assert_allclose(bandwidth, cases.reference_median_bandwidth(x0), rtol=RTOL)
    np.testing.assert_allclose(force, cases.reference_stein_force(x0, gradient(x0), float(bandwidth)), rtol=1e-11, atol=1e-13)
    kernel = vi.coin_svgd_kernel(cases.mixture_log_density, vi.rbf_kernel(1.5))
    run = jax.jit(lambda x: jax.lax.scan(lambda s, _: kernel.step(s), kernel.init(x), None, 4))
    state, info = run(x0)
    assert_float64((state, info))
    reference = cases.reference_coin(x0, lambda x: cases.reference_stein_force(x, gradient(jnp.asarray(x)), 1.5), 4)
    np.testing.assert_allclose(state.positions, reference, rtol=1e-11, atol=1e-13)
    svgd = vi.svgd_kernel(cases.mixture_log_density, 0.1)
    assert_float64(jax.jit(lambda x: svgd.step(svgd.init(x)))(x0))


def test_rejection_reparameterisation_is_float64():
    """Marsaglia and Tsang's accepted proposals and the correction's score in
    float64, boosted shapes included; the pilot of strategies="auto" runs too."""
    from ppl.transforms import RejectionReparam, choose_strategies, expectation

    @ppl.gen
    def gammas(a):
        return ppl.sample("g", dist.Gamma(a, 2.0).expand([4, 2]))

    program = lambda k, a: jnp.mean(gammas.simulate(k, (a,)).retval ** 2)
    value, grad = expectation(program, strategies={"g": RejectionReparam()}).value_and_grad_estimate(
        jax.random.key(0), jnp.array([0.5, 3.0]))
    assert_float64((value, grad))
    choice = choose_strategies(expectation(program, strategies="auto"), jax.random.key(1), jnp.array([0.5, 3.0]), num_pilot=16)
    assert ("g",) in choice.strategies


def test_flows_are_float64_and_the_fast_path_gradient_matches_the_inverse_to_1e7():
    """Every layer type in float64: draws, densities and both path gradients.
    At float64 the fast path gradient and the one through the inverse agree
    to rounding even where float32's spline inverse does not (far from the
    identity, steep bins); 1e-7, not 1e-12, since the planar reference differentiates
    through the Newton iterations of its inverse."""
    import test_vi_flows as flows

    guide = vi.flow(flows.banana, (None,), {}, layers=list(flows.LAYERS.values()))  # every type, one compile
    params = {"guide": flows.perturbed(guide.init_flow(), jax.random.key(5), 0.3)}
    assert_float64(params)
    trace = guide.simulate(jax.random.key(0), (params,))
    assert_float64((trace.choices, trace.log_density))
    np.testing.assert_allclose(guide.assess(trace.choices, (params,))[0], trace.log_density, rtol=1e-10)
    keys = jax.random.split(jax.random.key(6), 4)
    fast = jax.jit(jax.vmap(lambda k: vi.stl_elbo(flows.banana, guide).grad_estimate(k, params, {})))(keys)
    slow = jax.jit(jax.vmap(lambda k: flows.slow_stl(guide).grad_estimate(k, params)))(keys)
    assert_float64(fast)
    for f, s in zip(jax.tree.leaves(fast), jax.tree.leaves(slow)):
        np.testing.assert_allclose(f, s, rtol=1e-7, atol=1e-10)
