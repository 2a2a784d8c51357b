"""Errors for bad models and bad input: each raised, each message checked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import ppl
from ppl import dist


@ppl.gen
def pair():
    a = ppl.sample("a", dist.Normal(0.0, 1.0))
    return ppl.sample("b", dist.Normal(a, 1.0))


@ppl.gen
def model(xs):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    inner = ppl.sample("inner", pair())
    return ppl.sample("obs", dist.Normal(inner * xs, scale))


XS = jnp.arange(3.0)


def generate(constraints, args=(XS,), gf=model):
    return gf.generate(jax.random.key(0), constraints, args)


# ----- addresses --------------------------------------------------------------


def test_address_used_twice_names_it():
    @ppl.gen
    def twice():
        ppl.sample("x", dist.Normal(0.0, 1.0))
        return ppl.sample("x", dist.Normal(0.0, 1.0))

    @ppl.gen
    def outer():
        return ppl.sample("sub", twice())

    with pytest.raises(ppl.AddressError, match="address 'sub/x' is used twice"):
        outer.simulate(jax.random.key(0), ())


def test_factor_and_sample_share_the_address_space():
    @ppl.gen
    def clash():
        ppl.sample("x", dist.Normal(0.0, 1.0))
        ppl.factor("x", 1.0)

    with pytest.raises(ppl.AddressError, match="'x' is used twice"):
        clash.simulate(jax.random.key(0), ())


@pytest.mark.parametrize("bad", ["a/b", "", 3])
def test_malformed_address(bad):
    @ppl.gen
    def malformed():
        return ppl.sample(bad, dist.Normal(0.0, 1.0))

    with pytest.raises(ppl.AddressError, match="is not valid: addresses are non-empty strings without '/'"):
        malformed.simulate(jax.random.key(0), ())


def test_unknown_constraint_addresses_listed_with_suggestions():
    with pytest.raises(ppl.AddressError) as info:
        generate({"sacle": 1.0, "zzz": 1.0})
    message = str(info.value)
    assert "'sacle' (did you mean 'scale'?)" in message
    assert "'zzz'" in message and "'zzz' (did you mean" not in message
    assert "valid addresses here: 'inner', 'obs', 'scale'" in message


def test_unknown_nested_constraint_address_suggests_the_nested_one():
    with pytest.raises(ppl.AddressError) as info:
        generate({"inner": {"aa": 0.0}})
    assert "'inner/aa' (did you mean 'inner/a'?)" in str(info.value)
    assert "valid addresses here: 'inner/a', 'inner/b'" in str(info.value)


def test_unknown_address_inside_vmap_and_switch():
    @ppl.gen
    def point(x):
        return ppl.sample("y", dist.Normal(x, 1.0))

    @ppl.gen
    def mapped(xs):
        return ppl.sample("ys", point.vmap()(xs))

    with pytest.raises(ppl.AddressError, match=r"'ys/yy' \(did you mean 'ys/y'\?\)"):
        mapped.generate(jax.random.key(0), {"ys": {"yy": jnp.zeros(3)}}, (XS,))

    @ppl.gen
    def branching():
        return ppl.sample("v", ppl.cond(True, pair, pair))

    with pytest.raises(ppl.AddressError, match=r"'v/c'"):
        branching.generate(jax.random.key(0), {"v": {"c": 1.0}}, ())


def test_constraining_a_generative_function_with_a_value():
    expected = "address 'inner' is a generative function: constrain its choices with a dict"
    with pytest.raises(ppl.AddressError, match=expected):
        generate({"inner": 1.0})


def test_assess_needs_every_choice():
    with pytest.raises(ppl.AddressError, match="no value for address 'inner/b': assess needs a value for every choice"):
        model.assess({"scale": 1.0, "inner": {"a": 0.0}, "obs": jnp.zeros(3)}, (XS,))


# ----- constrained values: shape, dtype, support -----------------------------


def test_wrong_shape_names_address_and_both_shapes():
    expected = r"address 'obs': constrained value has shape \(2,\) but the choice has shape \(3,\)"
    with pytest.raises(ppl.ConstraintError, match=expected):
        generate({"obs": jnp.zeros(2)})
    expected = r"address 'inner/a': constrained value has shape \(3,\) but the choice has shape \(\)"
    with pytest.raises(ppl.ConstraintError, match=expected):
        generate({"inner": {"a": jnp.zeros(3)}})


def test_wrong_leading_axis_in_a_vmapped_site():
    @ppl.gen
    def point(x):
        return ppl.sample("y", dist.Normal(x, 1.0))

    expected = r"address 'y': the constrained value has shape \(2,\), but the combinator maps over 3"
    with pytest.raises(ppl.ConstraintError, match=expected):
        point.vmap().generate(jax.random.key(0), {"y": jnp.zeros(2)}, (XS,))


@pytest.mark.parametrize(
    "value, dtype", [(jnp.array([True, False, True]), "bool"), (jnp.zeros(3, jnp.complex64), "complex64")]
)
def test_wrong_dtype_for_a_continuous_choice(value, dtype):
    expected = f"address 'obs': constrained value has dtype {dtype}, which a continuous Normal"
    with pytest.raises(ppl.ConstraintError, match=expected):
        generate({"obs": value})


def test_not_an_array():
    with pytest.raises(ppl.ConstraintError, match="address 'scale': constrained value 'abc' is not an array"):
        generate({"scale": "abc"})


def test_bool_values_are_fine_for_a_bernoulli():
    @ppl.gen
    def coins():
        return ppl.sample("k", dist.Bernoulli(0.3).expand([3]))

    _, log_weight = coins.generate(jax.random.key(0), {"k": jnp.array([True, False, True])}, ())
    np.testing.assert_allclose(log_weight, 2 * np.log(0.3) + np.log(0.7), rtol=1e-6)


def test_out_of_support_observation_names_address_and_value():
    with pytest.raises(ppl.ConstraintError, match=r"address 'scale': observed value -1.0 is outside the support"):
        generate({"scale": -1.0})

    @ppl.gen
    def coins():
        p = jax.nn.sigmoid(ppl.sample("logit", dist.Normal(0.0, 1.0)))
        return ppl.sample("k", dist.Bernoulli(p).expand([3]))

    expected = r"address 'k': observed value 0.5 at index \(2,\) is outside the support"
    with pytest.raises(ppl.ConstraintError, match=expected):
        coins.generate(jax.random.key(0), {"k": jnp.array([0.0, 1.0, 0.5])}, ())
    with pytest.raises(ppl.ConstraintError, match=r"address 'k': observed value 2.0 at index \(0,\)"):
        ppl.inference.importance(jax.random.key(0), coins, (), {"k": jnp.array([2.0, 1.0, 0.0])}, 10)


def test_out_of_support_checked_on_every_call_not_only_when_compiling():
    """The support check must run on a second call with new values of the same
    shape and dtype, which reuses the compiled program."""
    generate({"scale": jnp.array(1.0)})
    with pytest.raises(ppl.ConstraintError, match="'scale': observed value -2.0"):
        generate({"scale": jnp.array(-2.0)})
    ppl.inference.importance(jax.random.key(0), model, (XS,), {"scale": jnp.array(1.0)}, 10)
    with pytest.raises(ppl.ConstraintError, match="'scale': observed value -3.0"):
        ppl.inference.importance(jax.random.key(0), model, (XS,), {"scale": jnp.array(-3.0)}, 10)


@pytest.mark.parametrize("generate_first", [True, False])
def test_out_of_support_checked_whichever_entry_point_traced_first(generate_first):
    """importance runs generate inside its own trace; JAX reuses generate's
    cached trace there (or importance's here), so the model body does not run
    again: the support checks must survive that."""

    @ppl.gen
    def coins():
        p = jax.nn.sigmoid(ppl.sample("logit", dist.Normal(0.0, 1.0)))
        return ppl.sample("k", dist.Bernoulli(p).expand([3]))

    good, bad = {"k": jnp.array([0.0, 1.0, 1.0])}, {"k": jnp.array([2.0, 1.0, 0.0])}
    calls = [
        lambda c: coins.generate(jax.random.key(0), c, ()),
        lambda c: ppl.inference.importance(jax.random.key(0), coins, (), c, 10),
    ]
    for call in calls if generate_first else calls[::-1]:
        call(good)
        with pytest.raises(ppl.ConstraintError, match=r"address 'k': observed value 2.0 at index \(0,\)"):
            call(bad)


def test_out_of_support_under_a_users_jit_gives_minus_infinity():
    log_weight = jax.jit(lambda s: generate({"scale": s})[1])(-1.0)
    assert np.isneginf(float(log_weight))
    assert np.isfinite(float(jax.jit(lambda s: generate({"scale": s})[1])(1.0)))
    run = lambda s: ppl.inference.importance(jax.random.key(0), model, (XS,), {"scale": s}, 8).log_weights
    log_weights = jax.jit(run)(-1.0)
    assert log_weights.shape == (8,) and np.all(np.isneginf(np.asarray(log_weights)))


def test_simplex_support():
    @ppl.gen
    def simplex():
        return ppl.sample("w", dist.Dirichlet(jnp.ones(3)))

    with pytest.raises(ppl.ConstraintError, match="address 'w': observed value .* is outside the support .*Simplex"):
        simplex.generate(jax.random.key(0), {"w": jnp.array([0.5, 0.6, -0.1])}, ())


# ----- arguments --------------------------------------------------------------


def test_non_finite_arguments_are_named():
    with pytest.raises(ValueError, match=r"args\[0\] \(shape \(3,\)\) contains NaN or infinite values"):
        model.simulate(jax.random.key(0), (jnp.array([0.0, jnp.nan, 1.0]),))
    with pytest.raises(ValueError, match=r"args\[0\] is nan: arguments must be finite"):
        model.simulate(jax.random.key(0), (float("nan"),))
    with pytest.raises(ValueError, match=r"args\[1\]\['w'\] \(shape \(\)\) contains NaN or infinite"):
        model.assess({}, (XS, {"w": jnp.array(jnp.inf)}))
    with pytest.raises(ValueError, match=r"args\[0\] \(shape \(3,\)\) contains NaN"):
        ppl.inference.importance(jax.random.key(0), model, (XS * jnp.nan,), {}, 10)


def test_arguments_of_update_and_regenerate_are_checked():
    trace = model.simulate(jax.random.key(0), (XS,))
    bad = (XS.at[1].set(jnp.inf),)
    with pytest.raises(ValueError, match=r"args\[0\] .* contains NaN or infinite"):
        model.update(jax.random.key(1), trace, {}, bad)
    with pytest.raises(ValueError, match=r"args\[0\] .* contains NaN or infinite"):
        model.regenerate(jax.random.key(1), trace, ppl.select("scale"), bad)


def test_finite_arguments_closed_over_by_a_users_jit_are_fine():
    log_density = jax.jit(lambda key: model.simulate(key, (XS,)).log_density)(jax.random.key(0))
    assert np.isfinite(float(log_density))


# ----- JAX control flow around random choices ---------------------------------


def _cond_model():
    return lax.cond(True, lambda: ppl.sample("y", dist.Normal(0.0, 1.0)), lambda: 0.0)


def _scan_model():
    return lax.scan(lambda c, _: (c + ppl.sample("y", dist.Normal(0.0, 1.0)), None), 0.0, None, length=3)


def _while_model():
    return lax.while_loop(lambda c: c < 1.0, lambda c: c + ppl.sample("y", dist.Normal(0.0, 1.0)), 0.0)


def _fori_model():
    return lax.fori_loop(0, 3, lambda i, c: c + ppl.sample("y", dist.Normal(0.0, 1.0)), 0.0)


def _vmap_model():
    return jax.vmap(lambda x: ppl.sample("y", dist.Normal(x, 1.0)))(XS)


def _jit_model():
    return jax.jit(lambda: ppl.sample("y", dist.Normal(0.0, 1.0)))()


@pytest.mark.parametrize(
    "body, primitive, instead",
    [
        (_cond_model, "jax.lax.cond", "ppl.cond(pred, true_gf, false_gf, *args)"),
        (_scan_model, "jax.lax.scan", "gf.scan(length)"),
        (_while_model, "jax.lax.while_loop", "gf.scan(length)"),
        (_fori_model, "jax.lax.fori_loop", "gf.scan(length)"),
        (_vmap_model, "jax.vmap", "gf.vmap(in_axes=...) or gf.repeat(n)"),
        (_jit_model, "jax.jit", "jax.jit(model.simulate)"),
    ],
    ids=["cond", "scan", "while_loop", "fori_loop", "vmap", "jit"],
)
def test_jax_control_flow_around_a_random_choice(body, primitive, instead):
    gf = ppl.gen(body)
    with pytest.raises(ppl.ControlFlowError) as info:
        gf.simulate(jax.random.key(0), ())
    message = str(info.value)
    assert f"random choice 'y' is made inside {primitive}," in message
    assert instead in message


def test_control_flow_error_also_under_generate_and_a_users_jit():
    gf = ppl.gen(_scan_model)
    with pytest.raises(ppl.ControlFlowError, match="jax.lax.scan"):
        gf.generate(jax.random.key(0), {}, ())
    with pytest.raises(ppl.ControlFlowError, match="jax.lax.scan"):
        jax.jit(lambda k: gf.simulate(k, ()).log_density)(jax.random.key(0))


def test_deterministic_control_flow_inside_a_model_is_fine():
    @ppl.gen
    def deterministic(x):
        total = lax.fori_loop(0, 3, lambda i, c: c + i, 0.0)
        doubled = lax.while_loop(lambda c: c < 10.0, lambda c: 2.0 * c, 1.0)
        branch = lax.cond(x > 0, lambda: 1.0, lambda: -1.0)
        squares = jax.vmap(lambda v: v**2)(jnp.arange(3.0))
        loc = total + doubled + branch + squares.sum()  # 3 + 16 + 1 + 5
        return ppl.sample("y", dist.Normal(loc, 1.0))

    trace, log_weight = deterministic.generate(jax.random.key(0), {"y": 25.0}, (1.0,))
    np.testing.assert_allclose(log_weight, -0.5 * np.log(2 * np.pi), rtol=1e-6)


# ----- misuse of the primitives -----------------------------------------------


def test_sample_outside_a_generative_function():
    with pytest.raises(RuntimeError, match=r"ppl.sample/ppl.factor\('x'\) was called outside a generative function"):
        ppl.sample("x", dist.Normal(0.0, 1.0))
    with pytest.raises(RuntimeError, match="outside a generative function"):
        ppl.factor("f", 1.0)


def test_sample_with_obs_points_to_choice_maps():
    @ppl.gen
    def numpyro_style():
        return ppl.sample("x", dist.Normal(0.0, 1.0), obs=1.0)

    expected = r"ppl.sample\('x', ..., obs=...\): ppl conditions by choice maps; pass \{'x': value\}"
    with pytest.raises(TypeError, match=expected):
        numpyro_style.simulate(jax.random.key(0), ())


def test_sample_of_an_uncalled_generative_function_or_a_number():
    @ppl.gen
    def uncalled():
        return ppl.sample("sub", pair)

    with pytest.raises(TypeError, match=r"call the generative function with its arguments, gf\(\*args\)"):
        uncalled.simulate(jax.random.key(0), ())

    @ppl.gen
    def number():
        return ppl.sample("x", 3.0)

    with pytest.raises(TypeError, match="takes a NumPyro distribution or a generative function .* got float"):
        number.simulate(jax.random.key(0), ())


def test_combinator_misuse():
    @ppl.gen
    def point(x):
        return ppl.sample("y", dist.Normal(x, 1.0))

    with pytest.raises(TypeError, match=r"vmap in_axes \(0, None\) has 2 entries for 1 arguments"):
        point.vmap(in_axes=(0, None)).simulate(jax.random.key(0), (XS,))

    @ppl.gen
    def no_carry(carry, x):
        return ppl.sample("z", dist.Normal(carry + x, 1.0))

    with pytest.raises(TypeError, match=r"a scanned function must return \(carry, y\)"):
        no_carry.scan().simulate(jax.random.key(0), (0.0, XS))

    @ppl.gen
    def scalar():
        return ppl.sample("a", dist.Normal(0.0, 1.0))

    @ppl.gen
    def vector():
        return ppl.sample("a", dist.Normal(0.0, 1.0).expand([2]))

    @ppl.gen
    def mismatched():
        return ppl.sample("v", ppl.cond(True, scalar, vector))

    with pytest.raises(ppl.AddressError, match=r"address 'v/a' is made by several branches with different shapes"):
        mismatched.simulate(jax.random.key(0), ())


# ----- improper priors --------------------------------------------------------


@ppl.gen
def flat_prior():
    x = ppl.sample("x", dist.ImproperUniform(dist.constraints.real, (), ()))
    return ppl.sample("y", dist.Normal(x, 1.0))


def test_improper_prior_cannot_be_simulated():
    expected = r"address 'x' has an improper prior \(ImproperUniform\): it cannot be simulated"
    with pytest.raises(ValueError, match=expected):
        flat_prior.simulate(jax.random.key(0), ())
    with pytest.raises(ValueError, match="address 'x' has an improper prior"):
        flat_prior.generate(jax.random.key(0), {"y": 1.0}, ())


def test_improper_prior_constrained_works():
    trace, log_weight = flat_prior.generate(jax.random.key(0), {"x": 2.0}, ())
    np.testing.assert_allclose(log_weight, 0.0)  # ImproperUniform's log density is 0
    np.testing.assert_allclose(trace.log_density, dist.Normal(2.0, 1.0).log_prob(trace.choices["y"]), rtol=1e-6)
    _, log_weight = flat_prior.generate(jax.random.key(0), {"x": 2.0, "y": 1.5}, ())
    np.testing.assert_allclose(log_weight, dist.Normal(2.0, 1.0).log_prob(1.5), rtol=1e-6)
    log_density, _ = flat_prior.assess({"x": 2.0, "y": 1.5}, ())
    np.testing.assert_allclose(log_density, log_weight)
    # An improper choice on a constrained support still checks the support.
    @ppl.gen
    def flat_positive():
        return ppl.sample("s", dist.ImproperUniform(dist.constraints.positive, (), ()))

    with pytest.raises(ppl.ConstraintError, match="address 's': observed value -1.0 is outside the support"):
        flat_positive.assess({"s": -1.0}, ())


# ----- arguments and keys -----------------------------------------------------


def test_args_that_are_not_a_tuple_are_refused_with_an_example():
    for call in (
        lambda: model.simulate(jax.random.key(0), XS),
        lambda: model.generate(jax.random.key(0), {}, XS),
        lambda: model.assess({}, XS),
    ):
        with pytest.raises(TypeError, match=r"args must be a tuple, e.g. \(xs,\).*shape \(3,\)"):
            call()
    assert model.simulate(jax.random.key(0), [XS]).choices["obs"].shape == (3,)  # a list is fine


@pytest.mark.parametrize("key", [0, 1.5, jnp.zeros(3)])
def test_a_seed_instead_of_a_key_says_what_to_pass(key):
    with pytest.raises(TypeError, match=r"expected a JAX random key, e.g. jax.random.key\(0\)"):
        model.simulate(key, (XS,))


def test_a_raw_prng_key_still_works():
    assert model.simulate(jax.random.PRNGKey(0), (XS,)).choices["obs"].shape == (3,)


def test_a_model_returning_a_non_jax_value_is_named():
    @ppl.gen
    def talks():
        ppl.sample("a", dist.Normal(0.0, 1.0))
        return "hello"

    with pytest.raises(TypeError, match=r"gen\(.*talks\) returned a value holding a str \('hello'\)"):
        talks.simulate(jax.random.key(0), ())


def test_wrong_number_of_arguments_names_the_model_and_its_signature():
    with pytest.raises(ppl.errors.ArgumentCountError, match=r"gen\(model\) takes \(xs\) but was called with 2"):
        model.simulate(jax.random.key(0), (XS, XS))


def test_assess_with_a_misspelt_address_names_it_and_suggests_the_right_one():
    choices = model.simulate(jax.random.key(0), (XS,)).choices
    choices = {"scale": choices["scale"], "inner": choices["inner"], "obz": choices["obs"]}
    with pytest.raises(ppl.AddressError, match=r"(?s)no value for address 'obs'.*'obz' \(did you mean 'obs'\?\)"):
        model.assess(choices, (XS,))


# ----- checks inside a user's jit ------------------------------------------------


@ppl.gen
def counts_model(x):
    rate = ppl.sample("rate", dist.Gamma(2.0, 1.0))
    ppl.sample("count", dist.Poisson(rate * x).expand([3]))


def _count_weight(counts, x):
    return counts_model.generate(jax.random.key(0), {"count": counts}, (x,))[1]


def test_checked_mode_raises_inside_jit_where_plain_jit_gives_minus_infinity():
    bad = jnp.array([1.0, -2.0, 3.0])
    assert jax.jit(_count_weight)(bad, 1.0) == -jnp.inf  # the documented unchecked behaviour
    checked = ppl.checked(_count_weight)
    good = jnp.array([1.0, 2.0, 3.0])
    assert jnp.allclose(checked(good, 1.0), _count_weight(good, 1.0))
    with pytest.raises(ppl.ConstraintError, match=r"address 'count': observed value outside the support.*-2\."):
        checked(bad, 1.0)
    with pytest.raises(ppl.ConstraintError, match=r"args\[0\] contains NaN"):
        checked(good, jnp.array(jnp.nan))
    assert jax.jit(_count_weight)(bad, 1.0) == -jnp.inf  # the checked trace did not leak into plain calls


def test_checks_are_skipped_only_for_the_very_array_that_passed_them():
    """A JAX array that passed a check is not read again (arrays are
    immutable); a NumPy array can change in place, so it is checked every call."""
    @ppl.gen
    def counts():
        ppl.sample("count", dist.Poisson(3.0).expand([3]))

    good = jnp.array([1.0, 2.0, 3.0])
    for _ in range(2):
        counts.generate(jax.random.key(0), {"count": good}, ())
    bad = jnp.array([1.0, -2.0, 3.0])
    for _ in range(2):  # a failure is never remembered as a pass
        with pytest.raises(ppl.ConstraintError, match="observed value -2.0"):
            counts.generate(jax.random.key(0), {"count": bad}, ())
    data = np.array([1.0, 2.0, 3.0])
    counts.generate(jax.random.key(0), {"count": data}, ())
    data[1] = -2.0
    with pytest.raises(ppl.ConstraintError, match="observed value -2.0"):
        counts.generate(jax.random.key(0), {"count": data}, ())
    xs = np.arange(3.0)
    model.simulate(jax.random.key(0), (xs,))
    xs[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.simulate(jax.random.key(0), (xs,))
