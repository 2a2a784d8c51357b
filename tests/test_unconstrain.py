"""The unconstraining transform, checked against NumPyro: each model is written
twice (ppl and NumPyro) and ``log_density`` is compared with NumPyro's
``-potential_energy`` at random positions, mapped to NumPyro's unconstrained
parameters by the documented layout (latents in model order, each raveled C
order on its unconstrained shape). Plus: dependent supports, the combinators,
the inverse map, log likelihoods, errors and compilation."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as numpyro_dist
import pytest
from numpyro.contrib.control_flow import scan as numpyro_scan
from numpyro.distributions import constraints
from numpyro.infer.util import log_likelihood as numpyro_log_likelihood
from numpyro.infer.util import potential_energy

import ppl
from ppl import dist
from ppl.transforms import unconstrain

NUM_POSITIONS = 16


def positions_of(target, seed=0, n=NUM_POSITIONS):
    return jax.vmap(target.initial_position)(jax.random.split(jax.random.key(seed), n))


def slices(target, position):
    """{address: unconstrained value}, read off ``position`` by the documented layout."""
    return {
        latent.address: position[latent.offset : latent.offset + latent.size].reshape(latent.unconstrained_shape)
        for latent in target.latents
    }


def numpyro_log_density(model, args, params_fn):
    """``position -> -potential_energy`` of a NumPyro model, params from ``params_fn(position)``."""
    return lambda position: -potential_energy(model, args, {}, params_fn(position))


def assert_matches(target, reference_fn, seed=0):
    positions = positions_of(target, seed)
    ours = jax.vmap(target.log_density)(positions)
    theirs = jax.jit(jax.vmap(reference_fn))(positions)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    return positions


def by_name(target, names):
    """``params_fn`` for a NumPyro model whose sites are ``names[address]``."""
    return lambda position: {names[a]: u for a, u in slices(target, position).items()}


# ----- every kind of support ------------------------------------------------------

DATA = jnp.array([0.3, -1.2, 2.5, 0.7])


@ppl.gen
def supports_model(data):
    loc = ppl.sample("loc", dist.Normal(0.0, 1.0))
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    rates = ppl.sample("rates", dist.Gamma(2.0, 1.0).expand([2]).to_event(1))
    p = ppl.sample("p", dist.Uniform(-1.0, 2.0))
    q = ppl.sample("q", dist.Beta(2.0, 3.0))
    w = ppl.sample("w", dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))
    cuts = ppl.sample("cuts", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
    gaps = ppl.sample("gaps", dist.ImproperUniform(constraints.positive_ordered_vector, (), (3,)))
    corr = ppl.sample("corr", dist.LKJCholesky(3, 2.0))
    chol = ppl.sample("chol", dist.WishartCholesky(5.0, scale_tril=jnp.eye(3)))
    flat = ppl.sample("flat", dist.ImproperUniform(constraints.real, (), (2,)))
    flat_positive = ppl.sample("flat_positive", dist.ImproperUniform(constraints.positive, (), ()))
    flat_interval = ppl.sample("flat_interval", dist.ImproperUniform(constraints.interval(0.0, 3.0), (), ()))
    mean = loc + rates.sum() + p * q + w @ cuts + 0.1 * gaps.sum() + corr[2, 1] + 0.1 * chol[2, 2] + flat.sum()
    ppl.sample("y", dist.Normal(mean, scale + 0.1 * flat_positive + flat_interval).expand([data.shape[0]]))


def numpyro_supports_model(data):
    sample = numpyro.sample
    loc = sample("loc", numpyro_dist.Normal(0.0, 1.0))
    scale = sample("scale", numpyro_dist.HalfNormal(1.0))
    rates = sample("rates", numpyro_dist.Gamma(2.0, 1.0).expand([2]).to_event(1))
    p = sample("p", numpyro_dist.Uniform(-1.0, 2.0))
    q = sample("q", numpyro_dist.Beta(2.0, 3.0))
    w = sample("w", numpyro_dist.Dirichlet(jnp.array([1.0, 2.0, 3.0])))
    cuts = sample("cuts", numpyro_dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
    gaps = sample("gaps", numpyro_dist.ImproperUniform(constraints.positive_ordered_vector, (), (3,)))
    corr = sample("corr", numpyro_dist.LKJCholesky(3, 2.0))
    chol = sample("chol", numpyro_dist.WishartCholesky(5.0, scale_tril=jnp.eye(3)))
    flat = sample("flat", numpyro_dist.ImproperUniform(constraints.real, (), (2,)))
    flat_positive = sample("flat_positive", numpyro_dist.ImproperUniform(constraints.positive, (), ()))
    flat_interval = sample("flat_interval", numpyro_dist.ImproperUniform(constraints.interval(0.0, 3.0), (), ()))
    mean = loc + rates.sum() + p * q + w @ cuts + 0.1 * gaps.sum() + corr[2, 1] + 0.1 * chol[2, 2] + flat.sum()
    sample("y", numpyro_dist.Normal(mean, scale + 0.1 * flat_positive + flat_interval), obs=data)


SUPPORTS_LAYOUT = [  # address, shape, unconstrained shape: written out by hand
    ("loc", (), ()),
    ("scale", (), ()),
    ("rates", (2,), (2,)),
    ("p", (), ()),
    ("q", (), ()),
    ("w", (3,), (2,)),
    ("cuts", (3,), (3,)),
    ("gaps", (3,), (3,)),
    ("corr", (3, 3), (3,)),
    ("chol", (3, 3), (6,)),
    ("flat", (2,), (2,)),
    ("flat_positive", (), ()),
    ("flat_interval", (), ()),
]


def supports_target():
    return unconstrain(supports_model, (DATA,), {"y": DATA})


def test_layout_is_model_order_raveled_on_unconstrained_shapes():
    target = supports_target()
    assert [(l.address, l.shape, l.unconstrained_shape) for l in target.latents] == [
        ((a,), s, u) for a, s, u in SUPPORTS_LAYOUT
    ]
    sizes = [int(np.prod(u, dtype=int)) for _, _, u in SUPPORTS_LAYOUT]
    assert [l.offset for l in target.latents] == list(np.cumsum([0] + sizes[:-1]))
    assert target.dimension == sum(sizes) == 27


def test_every_support_matches_numpyro_with_gradients():
    target = supports_target()
    names = {(a,): a for a, _, _ in SUPPORTS_LAYOUT}
    reference = numpyro_log_density(numpyro_supports_model, (DATA,), by_name(target, names))
    positions = assert_matches(target, reference)
    ours = jax.vmap(jax.grad(target.log_density))(positions)
    theirs = jax.jit(jax.vmap(jax.grad(reference)))(positions)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_constrained_values_lie_in_the_supports_and_invert():
    target = supports_target()
    positions = positions_of(target, seed=1)
    choices, _ = jax.vmap(target.constrain)(positions)
    assert sorted(choices) == sorted(a for a, _, _ in SUPPORTS_LAYOUT)  # no observed "y"
    supports = _numpyro_supports(jax.tree.map(lambda x: x[0], choices))
    for address, value in choices.items():
        assert np.all(supports[address].check(value)), address
    np.testing.assert_allclose(jax.vmap(target.unconstrain)(choices), positions, atol=2e-4)
    trace = supports_model.generate(jax.random.key(0), {**jax.tree.map(lambda x: x[0], choices), "y": DATA}, (DATA,))[0]
    np.testing.assert_allclose(target.unconstrain(trace.choices), positions[0], atol=2e-4)  # observed "y" ignored


def test_staging_flat_priors_leaves_simulate_an_error():
    supports_target()  # stages the model with its improper priors
    with pytest.raises(ValueError, match="address 'cuts' has an improper prior"):
        supports_model.simulate(jax.random.key(0), (DATA,))


def _numpyro_supports(values):
    """NumPyro's support of each latent site (traced at ``values``)."""
    trace = numpyro.handlers.trace(numpyro.handlers.substitute(numpyro_supports_model, values)).get_trace(DATA)
    return {name: site["fn"].support for name, site in trace.items() if not site["is_observed"]}


# ----- supports that depend on other choices -----------------------------------------


@ppl.gen
def stick(y):
    a1 = ppl.sample("a1", dist.Uniform(0.0, 1.0))
    a2 = ppl.sample("a2", dist.Uniform(0.0, 1.0 - a1))
    ppl.sample("y", dist.Normal(a1 + 2.0 * a2, 0.3))


def numpyro_stick(y):
    a1 = numpyro.sample("a1", numpyro_dist.Uniform(0.0, 1.0))
    a2 = numpyro.sample("a2", numpyro_dist.Uniform(0.0, 1.0 - a1))
    numpyro.sample("y", numpyro_dist.Normal(a1 + 2.0 * a2, 0.3), obs=y)


def test_a_dependent_support_is_rebuilt_at_every_position():
    target = unconstrain(stick, (0.8,), {"y": 0.8})
    positions = positions_of(target, n=500)
    choices, _ = jax.vmap(target.constrain)(positions)
    assert np.all((0.0 < choices["a2"]) & (choices["a2"] < 1.0 - choices["a1"]))
    assert np.ptp(1.0 - choices["a1"]) > 0.5  # the bound really moves
    reference = numpyro_log_density(numpyro_stick, (0.8,), by_name(target, {("a1",): "a1", ("a2",): "a2"}))
    assert_matches(target, reference)
    np.testing.assert_allclose(jax.vmap(target.unconstrain)(choices), positions, atol=1e-4)
    assert [str(s) for s in target.fixed_supports()] == [str(constraints.interval(0.0, 1.0)), "None"]


@ppl.gen
def mixed_supports(upper):
    u = ppl.sample("u", dist.Uniform(0.0, upper))  # from an argument: the same at every position
    v = ppl.sample("v", dist.Uniform(0.0, u))  # from another choice
    ppl.sample("s", dist.HalfNormal(1.0).expand([2]))  # whatever the parameters
    ppl.sample("y", dist.Normal(v, 1.0))


def test_fixed_supports():
    target = unconstrain(mixed_supports, (jnp.array(3.0),), {"y": 0.5})
    u, v, s = target.fixed_supports()
    assert str(u) == str(constraints.interval(0.0, 3.0)) and v is None and s is constraints.positive


# ----- submodels, vmap and repeat --------------------------------------------------


@ppl.gen
def point(x, slope):
    noise = ppl.sample("noise", dist.HalfNormal(1.0))
    return ppl.sample("y", dist.Normal(slope * x, noise))


@ppl.gen
def group():
    return ppl.sample("w", dist.Dirichlet(jnp.ones(3)))


@ppl.gen
def inner(loc):
    a = ppl.sample("a", dist.Normal(loc, 1.0))
    return a + ppl.sample("s", dist.Gamma(2.0, 2.0))


@ppl.gen
def nested(xs):
    slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
    offset = ppl.sample("sub", inner(slope))
    ws = ppl.sample("groups", group.repeat(2)())
    return ppl.sample("points", point.vmap(in_axes=(0, None))(xs + offset + ws[:, 0].sum(), slope))


def numpyro_nested(xs, ys):
    slope = numpyro.sample("slope", numpyro_dist.Normal(0.0, 1.0))
    offset = numpyro.sample("sub/a", numpyro_dist.Normal(slope, 1.0)) + numpyro.sample(
        "sub/s", numpyro_dist.Gamma(2.0, 2.0)
    )
    with numpyro.plate("groups", 2):
        ws = numpyro.sample("groups/w", numpyro_dist.Dirichlet(jnp.ones(3)))
    with numpyro.plate("points", xs.shape[0]):
        noise = numpyro.sample("points/noise", numpyro_dist.HalfNormal(1.0))
        numpyro.sample("points/y", numpyro_dist.Normal(slope * (xs + offset + ws[:, 0].sum()), noise), obs=ys)


NESTED_NAMES = {
    ("slope",): "slope",
    ("sub", "a"): "sub/a",
    ("sub", "s"): "sub/s",
    ("groups", "w"): "groups/w",
    ("points", "noise"): "points/noise",
}


def test_submodels_vmap_and_repeat_match_numpyro():
    target = unconstrain(nested, (DATA,), {"points": {"y": DATA}})
    assert [(l.address, l.shape, l.unconstrained_shape) for l in target.latents] == [
        (("slope",), (), ()),
        (("sub", "a"), (), ()),
        (("sub", "s"), (), ()),
        (("groups", "w"), (2, 3), (2, 2)),
        (("points", "noise"), (4,), (4,)),
    ]
    reference = numpyro_log_density(numpyro_nested, (DATA, DATA), by_name(target, NESTED_NAMES))
    positions = assert_matches(target, reference)
    choices, retval = target.constrain(positions[0])
    simulated = nested.simulate(jax.random.key(0), (DATA,)).choices
    del simulated["points"]["y"]
    assert jax.tree.structure(choices) == jax.tree.structure(simulated)
    assert jax.tree.map(jnp.shape, choices) == jax.tree.map(jnp.shape, simulated)
    np.testing.assert_allclose(retval, DATA)  # the observed ys are the return value


def test_log_likelihood_is_per_observed_choice():
    target = unconstrain(nested, (DATA,), {"points": {"y": DATA}})
    position = positions_of(target)[0]
    ours = target.log_likelihood(position)
    samples = {NESTED_NAMES[a]: v for a, v in ppl.choicemap.by_path(target.constrain(position)[0]).items()}
    theirs = numpyro_log_likelihood(numpyro_nested, samples, DATA, DATA, batch_ndims=0)
    assert list(ours) == ["points"] and ours["points"]["y"].shape == (4,)
    np.testing.assert_allclose(ours["points"]["y"], theirs["points/y"], rtol=1e-5)

    summed = unconstrain(supports_model, (DATA,), {"y": DATA})  # one choice holding 4 values: one number
    position = positions_of(summed)[0]
    params = {address[0]: u for address, u in slices(summed, position).items()}
    constrained = numpyro.infer.util.constrain_fn(numpyro_supports_model, (DATA,), {}, params)
    theirs = numpyro_log_likelihood(numpyro_supports_model, constrained, DATA, batch_ndims=0)["y"]
    np.testing.assert_allclose(summed.log_likelihood(position)["y"], theirs.sum(), rtol=1e-5)


# ----- scan -----------------------------------------------------------------------

STEPS = 5
XS = jnp.linspace(-1.0, 1.0, STEPS)
YS = jnp.array([0.2, -0.4, 1.1, 0.5, -0.3])


@ppl.gen
def step(carry, x):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    w = ppl.sample("w", group.repeat(2)())
    z = ppl.sample("z", dist.Normal(0.9 * carry + x + w[:, 0].sum(), scale))
    ppl.sample("y", dist.Normal(z, 0.5))
    return z, z


@ppl.gen
def chain(xs):
    init = ppl.sample("init", dist.Normal(0.0, 1.0))
    return ppl.sample("chain", step.scan()(init, xs))


def numpyro_steps(init, xs, ys):
    """The chain's steps as a Python loop: an independent reference for the scan."""
    carry = init
    for t in range(STEPS):
        scale = numpyro.sample(f"scale_{t}", numpyro_dist.HalfNormal(1.0))
        with numpyro.plate(f"w_plate_{t}", 2):
            w = numpyro.sample(f"w_{t}", numpyro_dist.Dirichlet(jnp.ones(3)))
        carry = numpyro.sample(f"z_{t}", numpyro_dist.Normal(0.9 * carry + xs[t] + w[:, 0].sum(), scale))
        numpyro.sample(f"y_{t}", numpyro_dist.Normal(carry, 0.5), obs=ys[t])


def numpyro_chain_unrolled(xs, ys):
    numpyro_steps(numpyro.sample("init", numpyro_dist.Normal(0.0, 1.0)), xs, ys)


def unrolled_params(target):
    def params(position):
        u = slices(target, position)
        out = {"init": u[("init",)]}
        for t in range(STEPS):
            out.update({f"scale_{t}": u[("chain", "scale")][t], f"z_{t}": u[("chain", "z")][t]})
            out[f"w_{t}"] = u[("chain", "w", "w")][t]
        return out

    return params


def test_latents_inside_a_scan_have_a_step_axis_and_match_numpyro():
    target = unconstrain(chain, (XS,), {"chain": {"y": YS}})
    assert [(l.address, l.shape, l.unconstrained_shape) for l in target.latents] == [
        (("init",), (), ()),
        (("chain", "scale"), (STEPS,), (STEPS,)),
        (("chain", "w", "w"), (STEPS, 2, 3), (STEPS, 2, 2)),
        (("chain", "z"), (STEPS,), (STEPS,)),
    ]
    positions = assert_matches(target, numpyro_log_density(numpyro_chain_unrolled, (XS, YS), unrolled_params(target)))
    choices, (final, zs) = target.constrain(positions[0])
    np.testing.assert_allclose(zs, choices["chain"]["z"])
    assert np.all(choices["chain"]["scale"] > 0)
    np.testing.assert_allclose(target.unconstrain(choices), positions[0], atol=1e-4)


def test_numpyro_scan_agrees_too():
    def numpyro_chain(xs, ys):
        def body(carry, inputs):
            x, y = inputs
            scale = numpyro.sample("scale", numpyro_dist.HalfNormal(1.0))
            z = numpyro.sample("z", numpyro_dist.Normal(0.9 * carry + x, scale))
            numpyro.sample("y", numpyro_dist.Normal(z, 0.5), obs=y)
            return z, z

        numpyro_scan(body, numpyro.sample("init", numpyro_dist.Normal(0.0, 1.0)), (xs, ys))

    @ppl.gen
    def simple_step(carry, x):
        z = ppl.sample("z", dist.Normal(0.9 * carry + x, ppl.sample("scale", dist.HalfNormal(1.0))))
        ppl.sample("y", dist.Normal(z, 0.5))
        return z, z

    @ppl.gen
    def simple_chain(xs):
        return ppl.sample("chain", simple_step.scan()(ppl.sample("init", dist.Normal(0.0, 1.0)), xs))

    target = unconstrain(simple_chain, (XS,), {"chain": {"y": YS}})
    names = {("init",): "init", ("chain", "scale"): "scale", ("chain", "z"): "z"}
    assert_matches(target, numpyro_log_density(numpyro_chain, (XS, YS), by_name(target, names)))


def test_a_vmap_of_scans_puts_the_step_axis_second():
    @ppl.gen
    def chains(inits, xs):
        return ppl.sample("chains", step.scan().vmap(in_axes=(0, None))(inits, xs))

    inits = jnp.array([0.5, -0.5, 1.5])
    ys = jnp.stack([YS, YS + 0.3, YS - 0.3])
    target = unconstrain(chains, (inits, XS), {"chains": {"y": ys}})
    assert [l.unconstrained_shape for l in target.latents] == [(3, STEPS), (3, STEPS, 2, 2), (3, STEPS)]
    simulated = chains.simulate(jax.random.key(0), (inits, XS)).choices
    choices, _ = target.constrain(positions_of(target)[0])
    assert choices["chains"]["w"]["w"].shape == simulated["chains"]["w"]["w"].shape == (3, STEPS, 2, 3)

    def reference(position):
        u = slices(target, position)
        total = 0.0
        for i in range(3):  # chain i is the unrolled chain from inits[i]
            params = {f"{name}_{t}": u[("chains",) + a][i, t] for t in range(STEPS) for name, a in NAMES_PER_STEP}
            total = total - potential_energy(numpyro_steps, (inits[i], XS, ys[i]), {}, params)
        return total

    assert_matches(target, reference)


NAMES_PER_STEP = [("scale", ("scale",)), ("w", ("w", "w")), ("z", ("z",))]


# ----- cond / switch -----------------------------------------------------------------


@ppl.gen
def wide(x):
    s = ppl.sample("s", dist.HalfNormal(1.0))
    return ppl.sample("y", dist.Normal(x, 1.0 + s))


@ppl.gen
def narrow(x):
    t = ppl.sample("t", dist.Normal(0.0, 1.0))
    return ppl.sample("y", dist.Normal(x + t, 0.5))


@ppl.gen
def branching(x):
    flag = ppl.sample("flag", dist.Bernoulli(0.5))
    return ppl.sample("v", ppl.cond(flag, wide, narrow, x))


def test_an_inactive_branch_contributes_nothing():
    for flag, active, inactive in [(1, "s", "t"), (0, "t", "s")]:
        target = unconstrain(branching, (0.3,), {"flag": flag, "v": {"y": 1.4}})
        assert [l.address for l in target.latents] == [("v", "t"), ("v", "s")]  # branch by branch, as lax.cond's
        half = numpyro_dist.HalfNormal(1.0)

        def reference(position):
            u = slices(target, position)
            if active == "s":
                s = jnp.exp(u[("v", "s")])
                return half.log_prob(s) + u[("v", "s")] + numpyro_dist.Normal(0.3, 1.0 + s).log_prob(1.4)
            t = u[("v", "t")]
            return numpyro_dist.Normal(0.0, 1.0).log_prob(t) + numpyro_dist.Normal(0.3 + t, 0.5).log_prob(1.4)

        positions = assert_matches(target, lambda p: reference(p) + jnp.log(0.5))
        gradient = jax.vmap(jax.grad(target.log_density))(positions)
        index = [l.address for l in target.latents].index(("v", inactive))
        assert np.all(gradient[:, index] == 0.0) and np.all(gradient[:, 1 - index] != 0.0)


@ppl.gen
def weights():
    return ppl.sample("w", dist.Dirichlet(jnp.ones(3)))


@ppl.gen
def no_weights():
    return jnp.full(3, 1.0 / 3.0)


@ppl.gen
def maybe_weighted(flag):
    w = ppl.sample("branch", ppl.cond(flag, weights, no_weights))
    ppl.sample("y", dist.Normal(w @ jnp.arange(3.0), 0.2))


def test_a_simplex_in_one_branch_only_inverts():
    """The untaken branch pads the choice (a 3-vector) while the taken one has
    2 unconstrained coordinates: the inverse must still line up."""
    for flag in (True, False):
        target = unconstrain(maybe_weighted, (flag,), {"y": 1.2})
        position = positions_of(target)[0]
        choices, _ = target.constrain(position)
        expected = position if flag else jnp.zeros(2)  # an untaken branch's choice holds zeros, and maps to 0
        np.testing.assert_allclose(target.unconstrain(choices), expected, atol=1e-5)


def test_cond_inside_a_vmap_masks_each_element():
    xs, flags, ys = jnp.array([0.0, 1.0, 2.0]), jnp.array([1, 0, 1]), jnp.array([0.4, 1.3, 3.5])
    target = unconstrain(branching.vmap(), (xs,), {"flag": flags, "v": {"y": ys}})
    assert [l.unconstrained_shape for l in target.latents] == [(3,), (3,)]

    def reference(position):
        u = slices(target, position)
        s, t = jnp.exp(u[("v", "s")]), u[("v", "t")]
        wide = numpyro_dist.HalfNormal(1.0).log_prob(s) + u[("v", "s")] + numpyro_dist.Normal(xs, 1.0 + s).log_prob(ys)
        narrow = numpyro_dist.Normal(0.0, 1.0).log_prob(t) + numpyro_dist.Normal(xs + t, 0.5).log_prob(ys)
        return jnp.sum(jnp.where(flags == 1, wide, narrow)) + 3 * jnp.log(0.5)

    assert_matches(target, reference)


# ----- errors ---------------------------------------------------------------------------


@ppl.gen
def with_discrete():
    k = ppl.sample("k", dist.Poisson(3.0))
    b = ppl.sample("inner", ppl.gen(lambda: ppl.sample("b", dist.Bernoulli(0.3)))())
    ppl.sample("y", dist.Normal(k + b, 1.0))


def test_discrete_latents_are_an_error_naming_them():
    with pytest.raises(TypeError, match=r"'k' \(Poisson\), 'inner/b' \(BernoulliProbs\) are discrete.*Gibbs"):
        unconstrain(with_discrete, (), {"y": 1.0})
    assert unconstrain(with_discrete, (), {"y": 1.0, "k": 2, "inner": {"b": 1}}).dimension == 0


def test_a_misspelt_observation_is_an_address_error_with_a_hint():
    with pytest.raises(ppl.AddressError, match=r"'points/yy' \(did you mean 'points/y'"):
        unconstrain(nested, (DATA,), {"points": {"yy": DATA}})
    with pytest.raises(ppl.ConstraintError, match=r"'points/y'.*shape \(3,\).*\(4,\)"):
        unconstrain(nested, (DATA,), {"points": {"y": DATA[:3]}})
    target = unconstrain(stick, (0.8,), {"y": 0.8})
    with pytest.raises(ValueError, match=r"position has shape \(3,\); this model's is \(2,\)"):
        target.log_density(jnp.zeros(3))
    with pytest.raises(ppl.AddressError, match="lack the latent 'a2'"):
        target.unconstrain({"a1": 0.5})


# ----- compilation, initial positions, precision -----------------------------------------

TRACES = collections.Counter()


class CountedNormal(dist.Normal):
    """Its log_prob runs in Python only while JAX traces: a trace counter."""

    def log_prob(self, value):
        TRACES["log_prob"] += 1
        return super().log_prob(value)


@ppl.gen
def counted(ys):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ppl.sample("ys", CountedNormal(mu, 1.0).expand([ys.shape[0]]))


def traced_during(fn):
    before = TRACES["log_prob"]
    jax.block_until_ready(fn())
    return TRACES["log_prob"] - before


def test_log_density_compiles_once():
    target = unconstrain(counted, (DATA,), {"ys": DATA})
    assert traced_during(lambda: target.log_density(jnp.array([0.1]))) > 0
    assert traced_during(lambda: target.log_density(jnp.array([0.7]))) == 0
    assert traced_during(lambda: jax.grad(target.log_density)(jnp.array([0.2]))) == 0  # grad reuses the trace
    new_data = unconstrain(counted, (DATA + 1.0,), {"ys": DATA - 1.0})  # new data, same shapes
    assert traced_during(lambda: new_data.log_density(jnp.array([0.7]))) == 0
    expected = dist.Normal(0.0, 1.0).log_prob(0.7) + dist.Normal(0.7, 1.0).log_prob(DATA - 1.0).sum()
    np.testing.assert_allclose(new_data.log_density(jnp.array([0.7])), expected, rtol=1e-6)
    jitted = jax.jit(lambda target, position: target.log_density(position))  # a pytree: passes through jit
    np.testing.assert_allclose(jitted(new_data, jnp.array([0.7])), expected, rtol=1e-6)
    built_inside = jax.jit(lambda data: unconstrain(counted, (data + 1.0,), {"ys": data}).log_density(jnp.array([0.7])))
    np.testing.assert_allclose(built_inside(DATA - 1.0), expected, rtol=1e-6)


def test_initial_position_is_uniform_on_the_box():
    target = supports_target()
    positions = positions_of(target, n=4000)
    assert positions.shape == (4000, target.dimension) and positions.dtype == jnp.result_type(float)
    assert np.all(np.abs(positions) < 2.0)
    assert np.all(np.abs(target.initial_position(jax.random.key(1), radius=0.5)) < 0.5)
    # uniform(-2, 2): mean 0 and variance 4/3, within 5 standard errors
    assert np.all(np.abs(positions.mean(0)) < 5 * np.sqrt(4 / 3 / 4000))
    assert np.all(np.abs(positions.var(0) - 4 / 3) < 5 * np.sqrt((16 / 5 - 16 / 9) / 4000))


def test_float64_under_x64():
    with jax.enable_x64(True):
        target = unconstrain(stick, (0.8,), {"y": 0.8})
        position = target.initial_position(jax.random.key(0))
        assert position.dtype == jnp.float64 and target.log_density(position).dtype == jnp.float64
        assert target.constrain(position)[0]["a2"].dtype == jnp.float64
        reference = numpyro_log_density(numpyro_stick, (0.8,), by_name(target, {("a1",): "a1", ("a2",): "a2"}))
        np.testing.assert_allclose(target.log_density(position), reference(position), rtol=1e-12)
