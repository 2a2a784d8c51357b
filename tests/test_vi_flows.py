"""Normalizing-flow families: each layer's log-determinant, inverse and score
recursions against autodiff of exact densities; the family's GFI on
constrained supports; the fast path gradient equal, draw for draw, to the
slow one through the inverse; the maximum-likelihood path gradient unbiased
and exactly zero at the target; fits that recover a known posterior."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import ppl
from ppl import dist
from ppl.inference import vi

K = 4.5
sg = jax.lax.stop_gradient

LAYERS = {
    "planar": vi.Planar,
    "radial": vi.Radial,
    "affine": vi.AffineCoupling,
    "spline": functools.partial(vi.SplineCoupling, num_bins=5, bound=2.5),
    "maf": vi.MaskedAutoregressive,
    "iaf": vi.InverseAutoregressive,
}


def perturbed(module, key, size=0.5):
    """``module`` with every parameter moved by ``size`` N(0, 1) noise (away
    from the identity each conditioned layer starts at)."""
    graph, state = nnx.split(module)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    leaves = [leaf + size * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return nnx.merge(graph, jax.tree.unflatten(tree, leaves))


def base_log_prob(x):
    return -0.5 * jnp.sum(x**2)


def layer_checks(layer, x, context):
    """Everything the layer test compares, computed in one jitted call."""
    y, log_det = layer.forward(x, context)
    jacobian = jax.jacfwd(lambda v: layer.forward(v, context)[0])(x)
    back, inverse_log_det = layer.inverse(y, context)
    # the score of the pushed-forward density at y, and the gradient at x of f(T(x)) |det J| for f = base
    pushed = lambda v: (lambda xi, ld: base_log_prob(xi) + ld)(*layer.inverse(v, context))
    pulled = lambda v: (lambda yi, ld: base_log_prob(yi) + ld)(*layer.forward(v, context))
    return {
        "log_det": (log_det, jnp.linalg.slogdet(jacobian)[1]),
        "inverse": (back, x),
        "inverse_log_det": (inverse_log_det, -log_det),
        "score_forward": (layer.score_forward(x, y, -x, context), jax.grad(pushed)(y)),
        "score_inverse": (layer.score_inverse(x, y, -y, context), jax.grad(pulled)(x)),
    }


# Planar and radial layers read no context; the others are checked with one
# (their conditioners read it), and affine coupling without too.
# Layer index 1 runs autoregressive layers in the reverse order; IAF, whose
# score solves a triangular system, is checked in both orders.
CASES = [("planar", False, 1), ("radial", False, 1), ("affine", False, 1), ("iaf", True, 0)] + [
    (n, True, 1) for n in ("affine", "spline", "maf", "iaf")]


@pytest.mark.parametrize("name, with_context, index", CASES,
                         ids=[f"{n}-{'context' if c else 'plain'}-{i}" for n, c, i in CASES])
def test_layer_jacobian_inverse_and_score_recursions(name, with_context, index):
    context = jnp.array([0.3, -1.0]) if with_context else None
    layer = LAYERS[name](3, index, 2 if with_context else 0, rngs=nnx.Rngs(0))
    layer = perturbed(layer, jax.random.key(1))
    checks = jax.jit(layer_checks)(layer, jnp.array([0.4, -1.3, 0.9]), context)
    for what, (actual, expected) in checks.items():
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-5, err_msg=what)


def test_autoregressive_layers_are_triangular_in_alternating_orders():
    x = jnp.array([0.1, 0.7, -0.4, 1.2])
    for cls in (vi.MaskedAutoregressive, vi.InverseAutoregressive):
        for index in (0, 1):  # odd layers run in the reverse order
            layer = perturbed(cls(4, index, rngs=nnx.Rngs(0)), jax.random.key(2))
            jacobian = jax.jacfwd(lambda v: layer.forward(v)[0])(x)
            zero, nonzero = (jnp.triu(jacobian, 1), jnp.tril(jacobian, -1))[:: 1 if index == 0 else -1]
            np.testing.assert_allclose(zero, 0.0, atol=1e-6)
            assert float(jnp.abs(nonzero).sum()) > 1e-3


def test_four_coupling_layers_move_every_coordinate_given_every_other():
    flow = perturbed(vi.Flow(3, [vi.AffineCoupling] * 4, rngs=nnx.Rngs(0)), jax.random.key(3))
    jacobian = jax.jacfwd(lambda v: flow.forward(v)[0])(jnp.array([0.3, -0.2, 0.8]))
    assert bool(jnp.all(jnp.abs(jacobian) > 1e-4))  # no structural zero left


def test_planar_stays_invertible_where_w_dot_u_is_below_minus_one():
    layer = vi.Planar(2, rngs=nnx.Rngs(0))
    layer.u[...], layer.w[...], layer.b[...] = jnp.array([-3.0, 0.0]), jnp.array([2.0, 0.0]), jnp.asarray(0.5)
    xs = jnp.linspace(-4.0, 4.0, 41)[:, None] * jnp.array([1.0, 0.3])
    ys, log_dets = jax.vmap(layer.forward)(xs)
    assert bool(jnp.all(jnp.isfinite(log_dets)))
    assert bool(jnp.all(jnp.diff(ys[:, 0]) > 0))  # monotone along w
    np.testing.assert_allclose(jax.vmap(layer.inverse)(ys)[0], xs, atol=1e-4)


def test_spline_is_the_identity_outside_its_bound():
    layer = perturbed(vi.SplineCoupling(2, bound=1.0, rngs=nnx.Rngs(0)), jax.random.key(3))
    x = jnp.array([0.2, 3.0])  # the second coordinate moves, and lies outside [-1, 1]
    y, log_det = layer.forward(x)
    assert float(y[1]) == 3.0 and float(log_det) == 0.0


# ----- the family ---------------------------------------------------------------


@ppl.gen
def constrained_model(params):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    weights = ppl.sample("weights", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))
    loc = ppl.sample("loc", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    ppl.sample("y", dist.Normal(loc.sum() + weights[0], scale))


@pytest.fixture(scope="module")
def flow_guide():
    guide = vi.flow(constrained_model, (None,), {"y": 0.3}, layers=[vi.AffineCoupling, vi.Planar] * 2)
    flow = perturbed(guide.init_flow(jax.random.key(0)), jax.random.key(4), 0.1)
    return guide, {"guide": flow}


def test_flow_draws_lie_in_the_supports_and_assess_matches_simulate(flow_guide):
    guide, params = flow_guide
    traces = jax.jit(jax.vmap(lambda k: guide.simulate(k, (params,))))(jax.random.split(jax.random.key(0), 64))
    assert guide.dimension == 1 + 2 + 2
    assert bool(jnp.all(traces.choices["scale"] > 0))
    np.testing.assert_allclose(traces.choices["weights"].sum(-1), 1.0, atol=1e-5)
    assessed = jax.jit(jax.vmap(lambda c: guide.assess(c, (params,))[0]))(traces.choices)
    np.testing.assert_allclose(assessed, traces.log_density, atol=1e-4)


def test_flow_density_is_the_pushed_forward_flow_density(flow_guide):
    """By hand: unconstrain each latent, join, run the flow backwards."""
    guide, params = flow_guide
    choices = {"scale": 0.7, "weights": jnp.array([0.2, 0.3, 0.5]), "loc": jnp.array([0.1, -0.4])}
    pieces, log_det = [], 0.0
    for value, support in [(choices["scale"], dist.constraints.positive), (choices["weights"], dist.constraints.simplex)]:
        transform = dist.transforms.biject_to(support)
        u = transform.inv(jnp.asarray(value))
        pieces.append(jnp.atleast_1d(u))
        log_det += jnp.sum(transform.log_abs_det_jacobian(u, jnp.asarray(value)))
    pieces.append(choices["loc"])
    expected = params["guide"].log_prob(jnp.concatenate(pieces)) - log_det
    np.testing.assert_allclose(guide.assess(choices, (params,))[0], expected, rtol=1e-5)


def test_flow_family_errors_name_what_is_wrong(flow_guide):
    guide, params = flow_guide
    with pytest.raises(TypeError, match="params\\['guide'\\] must be a vi.Flow"):
        guide.simulate(jax.random.key(0), ({"guide": {"loc": jnp.zeros(5)}},))
    other = vi.flow(constrained_model, (None,), {"y": 0.3}, layers=[vi.AffineCoupling])
    with pytest.raises(ValueError, match="R\\^3, the latents need R\\^5"):
        guide.simulate(jax.random.key(0), ({"guide": vi.Flow(3, [vi.AffineCoupling], rngs=nnx.Rngs(0))},))
    with pytest.raises(ppl.errors.MissingValueError, match="'weights'"):
        guide.assess({"scale": 1.0, "loc": jnp.zeros(2)}, (params,))
    with pytest.raises(ValueError, match="'loc': expected shape \\(2,\\)"):
        guide.assess({"scale": 1.0, "weights": jnp.ones(3) / 3, "loc": jnp.zeros(3)}, (params,))
    trace = guide.simulate(jax.random.key(0), (params,))
    with pytest.raises(ppl.errors.AddressError, match="jointly"):
        guide.regenerate(jax.random.key(1), trace, ppl.select("scale"), (params,))
    with pytest.raises(TypeError, match="layer classes"):
        vi.flow(constrained_model, (None,), {"y": 0.3}, layers=[vi.AffineCoupling(5, rngs=nnx.Rngs(0))])
    with pytest.raises(TypeError, match="init_flow"):
        vi.amortized_flow(constrained_model, (None,), {"y": 0.3}, [vi.AffineCoupling], 4).init_params()
    assert other.dimension == 5


def test_regenerating_every_latent_is_an_independence_move(flow_guide):
    guide, params = flow_guide
    trace = guide.simulate(jax.random.key(0), (params,))
    new, weight = guide.regenerate(jax.random.key(1), trace, ppl.select("scale", "weights", "loc"), (params,))
    np.testing.assert_allclose(weight, 0.0, atol=1e-4)  # a draw from the model itself: always accepted
    assert not bool(jnp.allclose(new.choices["loc"], trace.choices["loc"]))


# ----- path gradients -----------------------------------------------------------


@ppl.gen
def banana(params):
    a = ppl.sample("a", dist.Normal(0.0, 1.0))
    ppl.sample("b", dist.Normal(0.5 * a**2, 0.5))


def slow_stl(guide):
    """Sticking the landing through the inverse: log q at held parameters."""

    @ppl.transforms.expectation
    def objective(key, params):
        latents, _ = vi.sim(guide, key, (params,))
        log_q = vi.density(guide, latents, (sg(params),))
        return vi.density(banana, latents, (params,)) - log_q

    return objective


def test_fast_path_gradient_equals_the_one_through_the_inverse():
    """One flow with a layer of every type (one compilation; each layer's own
    recursion is checked above)."""
    guide = vi.flow(banana, (None,), {}, layers=list(LAYERS.values()))
    params = {"guide": perturbed(guide.init_flow(), jax.random.key(5), 0.1)}
    fast = vi.stl_elbo(banana, guide)
    keys = jax.random.split(jax.random.key(6), 8)
    fast_grads = jax.jit(jax.vmap(lambda k: fast.grad_estimate(k, params, {})))(keys)
    slow_grads = jax.jit(jax.vmap(lambda k: slow_stl(guide).grad_estimate(k, params)))(keys)
    standard = jax.jit(jax.vmap(lambda k: vi.elbo(banana, guide).grad_estimate(k, params, {})))(keys)
    for f, s, e in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(slow_grads), jax.tree.leaves(standard)):
        np.testing.assert_allclose(f, s, atol=2e-4, rtol=2e-3)
    differs = [not np.allclose(f, e, atol=1e-3) for f, e in zip(jax.tree.leaves(fast_grads), jax.tree.leaves(standard))]
    assert any(differs)  # the path gradient drops the score term: not the standard estimator


def test_flows_recover_a_correlated_gaussian_posterior():
    """Conjugate: x ~ N(z, I) with z ~ N(0, Sigma) has a Gaussian posterior
    and a closed-form evidence; an affine-coupling flow is exact for it, so
    the ELBO reaches log p(x) and the path estimator's variance vanishes."""
    prior = jnp.array([[1.0, 0.8], [0.8, 1.0]])
    x = jnp.array([1.0, -0.5])

    @ppl.gen
    def model(params):
        z = ppl.sample("z", dist.MultivariateNormal(jnp.zeros(2), prior))
        ppl.sample("x", dist.MultivariateNormal(z, jnp.eye(2)))

    log_evidence = dist.MultivariateNormal(jnp.zeros(2), prior + jnp.eye(2)).log_prob(x)
    guide = vi.flow(model, (None,), {"x": x}, layers=[functools.partial(vi.AffineCoupling, hidden_sizes=(16,))] * 4)
    objective = vi.stl_elbo(model, guide)
    result = vi.fit(objective, guide.init_params(), optax.adam(5e-3), 2000, ({"x": x},), key=jax.random.key(0), progress=False)
    estimates = jax.jit(jax.vmap(lambda k: objective.estimate(k, result.params, {"x": x})))(jax.random.split(jax.random.key(1), 2000))
    gap = float(log_evidence - estimates.mean())
    standard_error = float(estimates.std() / np.sqrt(len(estimates)))
    assert -K * standard_error < gap < 0.02  # the ELBO is a lower bound, nearly tight
    assert float(estimates.std()) < 0.1
    draws = guide.sample(jax.random.key(2), result.params, 4000)["z"]
    posterior_cov = prior - prior @ jnp.linalg.solve(prior + jnp.eye(2), prior)
    posterior_mean = prior @ jnp.linalg.solve(prior + jnp.eye(2), x)
    np.testing.assert_allclose(draws.mean(0), posterior_mean, atol=K * float(jnp.sqrt(posterior_cov.max() / 4000)))
    np.testing.assert_allclose(jnp.cov(draws.T), posterior_cov, atol=0.05)


# ----- maximum likelihood ---------------------------------------------------------


@ppl.gen
def target(params):
    ppl.sample("z", dist.MultivariateNormal(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.6], [0.6, 1.0]])))


def test_forward_kl_path_gradient_is_unbiased_and_zero_at_the_target():
    guide = vi.flow(target, (None,), {}, layers=[vi.AffineCoupling, vi.MaskedAutoregressive, vi.Radial])
    params = {"guide": perturbed(guide.init_flow(), jax.random.key(7), 0.2)}
    draws = target.vmap(in_axes=None, axis_size=2000).simulate(jax.random.key(8), (None,)).choices
    path, plain = vi.forward_kl(guide, target, {}), vi.forward_kl(guide)
    one = lambda objective: jax.jit(jax.vmap(lambda d: objective.grad_estimate(jax.random.key(0), params, jax.tree.map(lambda v: v[None], d))))
    path_grads, plain_grads = one(path)(draws), one(plain)(draws)
    for p, q in zip(jax.tree.leaves(path_grads), jax.tree.leaves(plain_grads)):
        difference = np.asarray(p - q).reshape(len(p), -1)
        standard_error = difference.std(0) / np.sqrt(len(p)) + 1e-6
        assert np.all(np.abs(difference.mean(0)) < K * standard_error)
    values = jax.jit(lambda d: (path.estimate(jax.random.key(0), params, d), plain.estimate(jax.random.key(0), params, d)))(draws)
    assert np.isclose(*values)
    # a flow that is the target (here: a standard normal target and the identity flow)
    @ppl.gen
    def standard(params):
        ppl.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    exact = vi.flow(standard, (None,), {}, layers=[vi.AffineCoupling] * 2)
    identity = exact.init_params()
    normal_draws = {"z": jax.random.normal(jax.random.key(9), (64, 2))}
    grads = jax.jit(vi.forward_kl(exact, standard, {}).grad_estimate)(jax.random.key(0), identity, normal_draws)
    plain_grads = jax.jit(vi.forward_kl(exact).grad_estimate)(jax.random.key(0), identity, normal_draws)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-5
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(plain_grads)) > 1e-2


def test_forward_kl_path_gradient_needs_a_flow_and_observations():
    guide = vi.mean_field(target, (None,), {})
    with pytest.raises(TypeError, match="needs a flow family"):
        vi.forward_kl(guide, target, {})
    with pytest.raises(TypeError, match="observations="):
        vi.forward_kl(vi.flow(target, (None,), {}, layers=[vi.Planar]), target)


# ----- every objective, and amortised flows ----------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda m, g: vi.elbo(m, g),
        lambda m, g: vi.iwelbo(m, g, 4),
        lambda m, g: vi.stl_elbo(m, g),
        lambda m, g: vi.renyi(m, g, 0.5, 4),
        lambda m, g: vi.rws(m, g, 4),
        lambda m, g: vi.vimco(m, g, 4),
    ],
    ids=["elbo", "iwelbo", "stl", "renyi", "rws", "vimco"],
)
def test_every_objective_takes_a_flow(make, flow_guide):
    guide, params = flow_guide
    objective = make(constrained_model, guide)
    grads = jax.jit(objective.grad_estimate)(jax.random.key(0), params, {"y": 0.3})
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


class Encoder(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(1, 4, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.linear(jnp.atleast_1d(x)))


@ppl.gen
def local_model(params, x):
    z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ppl.sample("x", dist.Normal(z, 0.5))


def test_an_amortized_flow_learns_a_posterior_for_every_datum():
    """z | x ~ N(0.8 x, 0.2): the conditioned flow gets both right for unseen x."""
    layers = [functools.partial(vi.AffineCoupling, hidden_sizes=(16,))] * 2
    guide = vi.amortized_flow(local_model, (None, 0.0), {"x": 0.0}, layers, context_size=4)
    params = {"encoder": {"encoder": Encoder(nnx.Rngs(0)), "flow": guide.init_flow(jax.random.key(0))}}
    xs = 2.0 * jax.random.normal(jax.random.key(1), (512,))
    objective = vi.per_datum(vi.stl_elbo(local_model, guide))
    result = vi.fit(objective, params, optax.adam(1e-2), 1500, ({"x": xs}, xs), key=jax.random.key(2), batch_size=64, progress=False)
    for x in (-1.5, 0.0, 1.0):
        z = guide.sample(jax.random.key(3), result.params, 4000, x)["z"]
        assert abs(float(z.mean()) - 0.8 * x) < 0.05 + K * float(np.sqrt(0.2 / 4000))
        assert abs(float(z.var()) - 0.2) < 0.04
    with pytest.raises(ValueError, match="context vector of shape \\(4,\\)"):
        bad = {"encoder": {"encoder": lambda x: jnp.zeros(3), "flow": guide.init_flow()}}
        guide.simulate(jax.random.key(0), (bad, 0.0))


def test_a_flow_density_is_scaled_as_a_whole_or_not_at_all(flow_guide):
    guide, params = flow_guide
    choices, log_q = vi.sim(guide, jax.random.key(0), (params,))
    everything = {"scale": 3.0, "weights": 3.0, "loc": 3.0}
    np.testing.assert_allclose(vi.density(guide, choices, (params,), scale=everything), 3.0 * log_q, rtol=1e-5)
    with pytest.raises(ValueError, match="one joint density"):
        vi.density(guide, choices, (params,), scale={"scale": 3.0})
    with pytest.raises(ValueError, match="at least one latent"):
        vi.flow(constrained_model, (None,), {"y": 0.3, "scale": 1.0, "weights": jnp.ones(3) / 3, "loc": jnp.zeros(2)}, [vi.Planar])
