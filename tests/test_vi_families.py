"""Variational families: which latents they cover, their exact densities on
constrained supports (checked against normal densities pushed through
NumPyro's bijections by hand), their sampling distributions (empirical
moments within K standard errors), amortised networks, and fits that recover
closed-form posteriors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

import ppl
from ppl import dist
from ppl.inference import vi

K = 4.5


# ----- a model with latents on every kind of support --------------------------


@ppl.gen
def offset(loc):
    return ppl.sample("a", dist.Normal(loc, 1.0))


@ppl.gen
def constrained_model(params, y):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    rates = ppl.sample("rates", dist.Gamma(2.0, 1.0).expand([2]).to_event(1))
    p = ppl.sample("p", dist.Uniform(-1.0, 2.0))
    w = ppl.sample("w", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))
    m = ppl.sample("m", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))
    a = ppl.sample("sub", offset(p))
    ppl.sample("y", dist.Normal(a + scale + rates.sum() + w[0] + m.sum(), 1.0))


ARGS, OBSERVATIONS = (None, 0.5), {"y": 0.5}

# Written out by hand (not read from the library): address, shape, support.
LATENTS = [
    (("scale",), (), constraints.positive),
    (("rates",), (2,), constraints.independent(constraints.positive, 1)),
    (("p",), (), constraints.interval(-1.0, 2.0)),
    (("w",), (3,), constraints.simplex),
    (("m",), (2, 3), constraints.independent(constraints.real, 2)),
    (("sub", "a"), (), constraints.real),
]
DIMENSION = 1 + 2 + 1 + 2 + 6 + 1  # the simplex on 3 points has 2 unconstrained coordinates


def unconstrained(choices):
    """The latents mapped to the unconstrained space, flattened and joined in
    model order, and the total log |det J| of the maps back to the supports."""
    parts, log_det = [], 0.0
    for address, _, support in LATENTS:
        value = ppl.get(choices, address)
        transform = biject_to(support)
        u = transform.inv(value)
        log_det = log_det + jnp.sum(transform.log_abs_det_jacobian(u, value))
        parts.append(jnp.reshape(u, -1))
    return jnp.concatenate(parts), log_det


def random_params(kind):
    keys = jax.random.split(jax.random.key(2), 3)
    loc = 0.5 * jax.random.normal(keys[0], (DIMENSION,))
    raw = jax.random.uniform(keys[1], (DIMENSION,), minval=-1.0, maxval=0.5)
    if kind == "mean_field":
        return {"guide": {"loc": loc, "raw_scale": raw}}
    off_diag = 0.3 * jax.random.normal(keys[2], (DIMENSION, DIMENSION))
    return {"guide": {"loc": loc, "raw_diag": raw, "off_diag": off_diag}}


def covariance(params, kind):
    own = params["guide"]
    if kind == "mean_field":
        return jnp.diag(jax.nn.softplus(own["raw_scale"]) ** 2)
    tril = jnp.tril(own["off_diag"], -1) + jnp.diag(jax.nn.softplus(own["raw_diag"]))
    return tril @ tril.T


@functools.cache
def family_of(kind):
    """One family object per kind, so the tests share its compiled programs."""
    return getattr(vi, kind)(constrained_model, ARGS, OBSERVATIONS)


@functools.cache
def draws(kind, n=20_000):
    """``(params, choices)``: ``n`` draws from ``family_of(kind)`` at random parameters."""
    params, family = random_params(kind), family_of(kind)
    keys = jax.random.split(jax.random.key(3), n)
    return params, jax.jit(jax.vmap(lambda k: family.simulate(k, (params, *ARGS[1:])).choices))(keys)


def first(choices, n):
    return jax.tree.map(lambda x: x[:n], choices)


# ----- latent_sites ------------------------------------------------------------


def test_latent_sites_in_model_order_without_observed():
    latents = vi.latent_sites(constrained_model, ARGS, OBSERVATIONS)
    assert [(l.address, l.shape) for l in latents] == [(a, s) for a, s, _ in LATENTS]
    for latent, (_, _, support) in zip(latents, LATENTS):
        assert str(latent.support) == str(support)  # NumPyro constraints compare by identity
    assert sum(latent.size for latent in latents) == DIMENSION
    inside_observed = vi.latent_sites(constrained_model, ARGS, {"y": 0.5, "sub": {"a": 1.0}})
    assert [latent.address for latent in inside_observed] == [a for a, _, _ in LATENTS[:-1]]


@ppl.gen
def two_latents(loc):
    a = ppl.sample("a", dist.Normal(loc, 1.0))
    s = ppl.sample("s", dist.HalfNormal(1.0))
    return a * s


@ppl.gen
def nested_model(params):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    value = ppl.sample("inner", two_latents(mu))
    ppl.sample("y", dist.Normal(value, 1.0))


@pytest.mark.parametrize("build", [vi.mean_field, vi.full_rank], ids=lambda f: f.__name__)
def test_a_submodel_with_several_latents(build):
    family = build(nested_model, (None,), {"y": 0.3})
    assert [l.address for l in family.latents] == [("mu",), ("inner", "a"), ("inner", "s")]
    params = family.init_params(jax.random.key(0))
    trace = family.simulate(jax.random.key(1), (params,))
    assert trace.choices["inner"]["s"] > 0
    log_density, _ = family.assess(trace.choices, (params,))
    assert jnp.isclose(log_density, trace.log_density, atol=1e-5)


@ppl.gen
def poisson_inside(params):
    k = ppl.sample("k", dist.Poisson(3.0))
    ppl.sample("y", dist.Normal(k, 1.0))


@ppl.gen
def outer_discrete(params):
    ppl.sample("outer", poisson_inside(params))


def test_a_discrete_latent_is_a_type_error_naming_its_address():
    with pytest.raises(TypeError, match="'outer/k'.*discrete"):
        vi.latent_sites(outer_discrete, (None,), {"outer": {"y": 1.0}})
    assert vi.latent_sites(outer_discrete, (None,), {"outer": {"y": 1.0, "k": 2}}) == []


@ppl.gen
def bounded(upper):
    return ppl.sample("u", dist.Uniform(0.0, upper))


@ppl.gen
def varying_supports(params, uppers):
    us = ppl.sample("us", bounded.vmap()(uppers))
    ppl.sample("y", dist.Normal(us.sum(), 1.0))


@ppl.gen
def shared_support(params, upper):
    us = ppl.sample("us", bounded.vmap(in_axes=None, axis_size=3)(upper))
    ppl.sample("y", dist.Normal(us.sum(), 1.0))


UPPERS = jnp.array([1.0, 2.0, 3.0])


def test_a_support_varying_across_a_vmap_needs_supports():
    with pytest.raises(TypeError, match="'us/u'.*supports="):
        vi.latent_sites(varying_supports, (None, UPPERS), {"y": 1.0})
    (latent,) = vi.latent_sites(varying_supports, (None, UPPERS), {"y": 1.0}, supports={"us/u": constraints.positive})
    assert latent.address == ("us", "u") and latent.shape == (3,) and latent.support is constraints.positive


def test_a_support_shared_across_a_vmap_is_found():
    (latent,) = vi.latent_sites(shared_support, (None, 2.0), {"y": 1.0})
    assert latent.shape == (3,) and str(latent.support) == str(constraints.interval(0.0, 2.0))


@ppl.gen
def latent_bound(params):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    u = ppl.sample("u", dist.Uniform(0.0, scale))
    ppl.sample("y", dist.Normal(u, 1.0))


def test_a_support_depending_on_another_latent_needs_supports():
    """Its bounds change from draw to draw: a support read off one draw would
    put the family's mass outside the model's support."""
    with pytest.raises(TypeError, match="'u'.*supports="):
        vi.latent_sites(latent_bound, (None,), {"y": 0.3})
    latents = vi.latent_sites(latent_bound, (None,), {"y": 0.3}, supports={"u": constraints.positive})
    assert latents[1].support is constraints.positive


@ppl.gen
def walk_step(carry, _):
    z = ppl.sample("z", dist.Normal(carry, 1.0))
    ppl.sample("y", dist.Normal(z, 1.0))
    return z, None


@ppl.gen
def scaled(x):
    return x * ppl.sample("s", dist.HalfNormal(1.0))


@ppl.gen
def unscaled(x):
    return x


@ppl.gen
def control_flow_model(params):
    ppl.sample("walk", walk_step.scan(3)(0.0, None))
    flag = ppl.sample("flag", dist.Bernoulli(0.5))
    value = ppl.sample("v", ppl.cond(flag, scaled, unscaled, 1.0))
    ppl.sample("obs", dist.Normal(value, 1.0))


CONTROL_FLOW_OBSERVATIONS = {"walk": {"y": jnp.zeros(3)}, "flag": 1, "obs": 0.5}


def test_latents_inside_scan_and_cond_are_found():
    """The interpreter records a scan body's and a cond branch's choices in
    children of the recorder it is given, of the recorder's own class."""
    latents = vi.latent_sites(control_flow_model, (None,), CONTROL_FLOW_OBSERVATIONS)
    assert [(l.address, l.shape, str(l.support)) for l in latents] == [
        (("walk", "z"), (3,), str(constraints.real)),
        (("v", "s"), (), str(constraints.positive)),
    ]
    family = vi.mean_field(control_flow_model, (None,), CONTROL_FLOW_OBSERVATIONS)
    choices = family.simulate(jax.random.key(0), (family.init_params(),)).choices
    assert choices["walk"]["z"].shape == (3,) and choices["v"]["s"] > 0


@ppl.gen
def bounded_step(carry, _):
    u = ppl.sample("u", dist.Uniform(0.0, carry))
    return carry + 1.0, u


@ppl.gen
def bounded_walk(params):
    _, us = ppl.sample("walk", bounded_step.scan(3)(1.0, None))
    ppl.sample("y", dist.Normal(us.sum(), 1.0))


def test_a_support_depending_on_parameters_inside_scan_needs_supports():
    with pytest.raises(TypeError, match="'walk/u'.*vmap or scan.*supports="):
        vi.latent_sites(bounded_walk, (None,), {"y": 1.0})
    (latent,) = vi.latent_sites(bounded_walk, (None,), {"y": 1.0}, supports={"walk/u": constraints.positive})
    assert latent.shape == (3,) and latent.support is constraints.positive


# ----- densities and sampling distributions ------------------------------------


@pytest.mark.parametrize("kind", ["mean_field", "full_rank"])
def test_draws_lie_in_the_supports(kind):
    _, choices = draws(kind)
    for address, _, support in LATENTS:
        assert np.all(support.check(ppl.get(choices, address))), address
    assert np.allclose(choices["w"].sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["mean_field", "full_rank"])
def test_density_is_the_pushed_forward_normal(kind):
    params, choices = draws(kind)
    reference = dist.MultivariateNormal(params["guide"]["loc"], covariance(params, kind))
    family = family_of(kind)

    @jax.jit
    @jax.vmap
    def compare(one):
        u, log_det = unconstrained(one)
        log_density, _ = family.assess(one, (params, *ARGS[1:]))
        return log_density, reference.log_prob(u) - log_det

    log_density, expected = compare(first(choices, 256))
    assert np.allclose(log_density, expected, rtol=1e-4, atol=1e-3), (log_density, expected)


@pytest.mark.parametrize("kind", ["mean_field", "full_rank"])
def test_unconstrained_draws_have_the_family_moments(kind):
    """Mean loc and covariance L L^T, entry by entry within K standard errors."""
    params, choices = draws(kind)
    u = np.asarray(jax.jit(jax.vmap(lambda c: unconstrained(c)[0]))(choices), np.float64)
    centred = u - np.asarray(params["guide"]["loc"])
    mean, mean_se = centred.mean(0), centred.std(0) / np.sqrt(len(u))
    assert np.all(np.abs(mean) < K * mean_se), mean / mean_se
    products = centred[:, :, None] * centred[:, None, :]
    cov, cov_se = products.mean(0), products.std(0) / np.sqrt(len(u))
    exact = np.asarray(covariance(params, kind))
    assert np.all(np.abs(cov - exact) < K * cov_se + 1e-6), np.max(np.abs(cov - exact) / cov_se)


def test_full_rank_with_zero_off_diagonal_is_mean_field():
    diagonal, choices = draws("mean_field")
    upper_only = jnp.triu(jnp.ones((DIMENSION, DIMENSION)))  # only the strict lower triangle is used
    full = {"guide": {"loc": diagonal["guide"]["loc"], "raw_diag": diagonal["guide"]["raw_scale"], "off_diag": upper_only}}
    mean_field, full_rank = family_of("mean_field"), family_of("full_rank")
    both = jax.jit(jax.vmap(lambda c: (mean_field.assess(c, (diagonal, 0.5))[0], full_rank.assess(c, (full, 0.5))[0])))
    mean_field_density, full_rank_density = both(first(choices, 256))
    assert np.allclose(mean_field_density, full_rank_density, rtol=1e-5, atol=1e-4)


def test_init_params():
    params = vi.full_rank(constrained_model, ARGS, OBSERVATIONS, name="q").init_params()
    assert np.allclose(covariance({"guide": params["q"]}, "full_rank"), 0.01 * np.eye(DIMENSION), atol=1e-6)


# ----- amortized families --------------------------------------------------------


@ppl.gen
def small_model(params, x):
    z = ppl.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    s = ppl.sample("s", dist.HalfNormal(1.0))
    ppl.sample("x", dist.Normal(z.sum(), s).expand([3]).to_event(1))


X3 = jnp.array([0.5, 1.0, -1.5])


def test_amortized_network_output_size_is_checked():
    family = vi.amortized(small_model, (None, X3), {"x": X3})
    assert family.num_network_outputs == 2 * 3
    wrong = {"encoder": nnx.Linear(3, 5, rngs=nnx.Rngs(0))}
    with pytest.raises(ValueError, match="6 numbers.*got shape \\(5,\\)"):
        family.simulate(jax.random.key(0), (wrong, X3))
    with pytest.raises(TypeError, match="network"):
        family.init_params()


def test_amortized_density_and_gradients_reach_the_module():
    family = vi.amortized(small_model, (None, X3), {"x": X3})
    params = {"encoder": nnx.Linear(3, 6, rngs=nnx.Rngs(0))}
    trace = family.simulate(jax.random.key(0), (params, X3))
    out = params["encoder"](X3)
    loc, scale = out[:3], jax.nn.softplus(out[3:])
    u = jnp.concatenate([trace.choices["z"], jnp.log(trace.choices["s"])[None]])
    expected = dist.Normal(loc, scale).log_prob(u).sum() - u[2]  # s = exp(u): log |ds/du| = u
    assert jnp.isclose(trace.log_density, expected, atol=1e-4)

    grads = vi.elbo(small_model, family).grad_estimate(jax.random.key(1), params, {"x": X3}, X3)
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == 2  # the Linear's kernel and bias
    assert all(np.all(np.isfinite(leaf)) and np.any(leaf != 0) for leaf in leaves)


# ----- fits that recover closed-form posteriors ---------------------------------

SEEDS = 12  # independent fits: their spread measures the optimisation noise


def fit_many(objective, params, num_steps, args, init_value=0.05):
    """Final parameters of ``SEEDS`` fits with Adam and an exponentially decaying
    step size (one compilation: same objective and optimiser)."""
    optimizer = optax.adam(optax.exponential_decay(init_value, num_steps, 1e-3))
    results = [
        vi.fit(objective, params, optimizer, num_steps, args, key=jax.random.key(seed), progress=False).params
        for seed in range(SEEDS)
    ]
    return jax.tree.map(lambda *xs: np.stack(xs), *results)


def assert_recovers(values, exact, scale):
    """The mean over seeds is within K standard errors of ``exact``, and the
    noise is small enough (relative to the posterior ``scale``) to mean something."""
    values = np.asarray(values, np.float64)
    mean, sd = values.mean(0), values.std(0, ddof=1)
    assert np.all(sd < 0.05 * scale), (sd, scale)
    assert np.all(np.abs(mean - exact) < K * sd / np.sqrt(SEEDS) + 1e-4 * scale), (mean, exact, sd)


DATA = jnp.array([0.3, 1.9, 1.2, 2.5, 0.8])


@ppl.gen
def conjugate(params, xs):
    z = ppl.sample("z", dist.Normal(1.0, 2.0))
    ppl.sample("x", dist.Normal(z, 0.7).expand([xs.shape[0]]).to_event(1))


def test_mean_field_fit_recovers_the_conjugate_posterior():
    precision = 1 / 2.0**2 + len(DATA) / 0.7**2
    mean, sd = (1.0 / 2.0**2 + float(DATA.sum()) / 0.7**2) / precision, precision**-0.5
    guide = vi.mean_field(conjugate, (None, DATA), {"x": DATA})
    params = fit_many(vi.elbo(conjugate, guide), guide.init_params(), 4000, ({"x": DATA}, DATA))["guide"]
    assert_recovers(params["loc"][:, 0], mean, sd)
    assert_recovers(jax.nn.softplus(params["raw_scale"][:, 0]), sd, sd)


INPUTS = jnp.array([1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
TARGETS = jnp.array([2.1, 2.4, 3.3, 3.2, 4.4, 4.6])
NOISE, PRIOR_SCALE = 0.5, 2.0


@ppl.gen
def regression(params, inputs):
    w = ppl.sample("w", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    ppl.sample("y", dist.Normal(w[0] + w[1] * inputs, NOISE).to_event(1))


def regression_posterior():
    design = np.stack([np.ones(len(INPUTS)), np.asarray(INPUTS)], 1)
    precision = np.eye(2) / PRIOR_SCALE**2 + design.T @ design / NOISE**2
    covariance = np.linalg.inv(precision)
    return covariance @ design.T @ np.asarray(TARGETS) / NOISE**2, covariance, precision


def test_full_rank_fit_recovers_a_correlated_posterior_and_mean_field_cannot():
    mean, cov, precision = regression_posterior()
    assert abs(cov[0, 1]) / np.sqrt(cov[0, 0] * cov[1, 1]) > 0.9  # strongly correlated
    args, observations = (None, INPUTS), {"y": TARGETS}
    scale = np.sqrt(np.diag(cov))

    full_rank = vi.full_rank(regression, args, observations)
    fitted = fit_many(vi.elbo(regression, full_rank), full_rank.init_params(), 6000, (observations, INPUTS))["guide"]
    assert_recovers(fitted["loc"], mean, scale)
    fitted_cov = jax.vmap(lambda p: covariance({"guide": p}, "full_rank"))(fitted)
    assert_recovers(fitted_cov.reshape(SEEDS, 4), cov.reshape(4), np.outer(scale, scale).reshape(4))

    # Mean field's optimum for a normal target: the exact means, variances 1 / precision_ii.
    mean_field = vi.mean_field(regression, args, observations)
    fitted = fit_many(vi.elbo(regression, mean_field), mean_field.init_params(), 6000, (observations, INPUTS))["guide"]
    assert_recovers(fitted["loc"], mean, scale)
    mean_field_sd = 1 / np.sqrt(np.diag(precision))
    assert_recovers(jax.nn.softplus(fitted["raw_scale"]), mean_field_sd, mean_field_sd)
    assert np.all(mean_field_sd < 0.5 * scale)  # far from the true marginal sds


def test_amortized_fit_learns_the_exact_posterior_map():
    """x ~ N(z, 0.5), z ~ N(0, 1): z | x ~ N(0.8 x, 1 / 5), which a linear
    encoder represents exactly (location 0.8 x + 0, raw scale constant)."""

    @ppl.gen
    def model(params, x):
        z = ppl.sample("z", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(z, 0.5))

    xs = jnp.linspace(-2.0, 2.0, 16)
    guide = vi.amortized(model, (None, xs[:1]), {"x": xs[0]})
    objective = vi.per_datum(vi.elbo(model, guide), in_axes=(0, 0))
    params = {"encoder": nnx.Linear(1, 2, rngs=nnx.Rngs(0))}
    fitted = fit_many(objective, params, 3000, ({"x": xs}, xs[:, None]))["encoder"]
    kernel, bias = fitted.kernel[...], fitted.bias[...]
    assert_recovers(kernel[:, 0, 0], 0.8, 0.2**0.5)
    assert_recovers(bias[:, 0], 0.0, 0.2**0.5)
    assert_recovers(jax.nn.softplus(bias[:, 1]), 0.2**0.5, 0.2**0.5)
