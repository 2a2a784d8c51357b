"""Each GFI entry point compiles once per signature.

A model body is Python that runs only while JAX traces it, so a counter it
increments counts traces. A second call with new values of the same shapes
and dtypes must not trace again.
"""

import collections

import jax
import jax.numpy as jnp
import pytest

import ppl
from ppl import dist

TRACES = collections.Counter()


def make_model():
    """A fresh model (its own compile caches), so each test is independent of
    what others compiled."""

    @ppl.gen
    def point(x, slope):
        TRACES["point"] += 1
        return ppl.sample("y", dist.Normal(slope * x, 0.5))

    @ppl.gen
    def step(carry, x):
        TRACES["step"] += 1
        z = ppl.sample("z", dist.Normal(0.9 * carry + x, 1.0))
        return z, z

    @ppl.gen
    def wide(x):
        TRACES["wide"] += 1
        s = ppl.sample("s", dist.HalfNormal(1.0))
        return ppl.sample("y", dist.Normal(x, 1.0 + s))

    @ppl.gen
    def narrow(x):
        return ppl.sample("y", dist.Normal(x, 0.5))

    @ppl.gen
    def model(xs):
        TRACES["model"] += 1
        slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
        ys = ppl.sample("ys", point.vmap(in_axes=(0, None))(xs, slope))
        _, zs = ppl.sample("chain", step.scan()(0.0, xs))
        flag = ppl.sample("flag", dist.Bernoulli(0.5))
        return ppl.sample("v", ppl.cond(flag, wide, narrow, ys.sum() + zs.sum()))

    return model


XS = jnp.linspace(0.0, 1.0, 4)


def traced_during(fn):
    before = sum(TRACES.values())
    fn()
    return sum(TRACES.values()) - before


def check_compiles_once(first, second):
    assert traced_during(first) > 0  # the counter does count traces
    assert traced_during(second) == 0


def test_simulate():
    model = make_model()
    check_compiles_once(
        lambda: model.simulate(jax.random.key(0), (XS,)),
        lambda: model.simulate(jax.random.key(1), (XS + 1.0,)),
    )


def test_assess():
    model = make_model()
    a, b = (model.simulate(jax.random.key(i), (XS,)).choices for i in (2, 3))
    check_compiles_once(lambda: model.assess(a, (XS,)), lambda: model.assess(b, (XS * 2.0,)))


def test_generate():
    model = make_model()
    observed = lambda v: {"ys": {"y": v}, "v": {"y": v.sum()}}
    check_compiles_once(
        lambda: model.generate(jax.random.key(0), observed(XS), (XS,)),
        lambda: model.generate(jax.random.key(1), observed(XS - 3.0), (XS + 0.5,)),
    )


def test_update():
    model = make_model()
    a, b = (model.simulate(jax.random.key(i), (XS,)) for i in (4, 5))
    check_compiles_once(
        lambda: model.update(jax.random.key(0), a, {"slope": jnp.array(0.3), "flag": jnp.array(1)}, (XS,)),
        lambda: model.update(jax.random.key(1), b, {"slope": jnp.array(-2.0), "flag": jnp.array(0)}, (XS * 3.0,)),
    )


def test_regenerate():
    model = make_model()
    a, b = (model.simulate(jax.random.key(i), (XS,)) for i in (6, 7))
    selection = ppl.select("slope", "flag")
    check_compiles_once(
        lambda: model.regenerate(jax.random.key(0), a, selection, (XS,)),
        lambda: model.regenerate(jax.random.key(1), b, ppl.select("slope", "flag"), (XS,)),
    )


def test_importance():
    model = make_model()
    run = lambda key, ys: ppl.inference.importance(key, model, (XS,), {"ys": {"y": ys}}, 100)
    check_compiles_once(lambda: run(jax.random.key(0), XS), lambda: run(jax.random.key(1), XS * 2.0))


def test_raw_and_typed_keys_share_one_compile():
    model = make_model()
    check_compiles_once(
        lambda: model.simulate(jax.random.key(0), (XS,)),
        lambda: (model.simulate(jax.random.PRNGKey(1), (XS,)), model.simulate(jax.random.key(9), (XS,))),
    )


def test_a_users_jit_does_not_retrace():
    model = make_model()
    @jax.jit
    def log_weight(key, ys):
        return model.generate(key, {"ys": {"y": ys}}, (XS,))[1]

    check_compiles_once(lambda: log_weight(jax.random.key(0), XS), lambda: log_weight(jax.random.key(1), XS + 2.0))


@pytest.mark.parametrize("n", [3, 5])
def test_python_arguments_are_static(n):
    """Python values are part of the signature: the same value reuses the
    compiled program, a new value (a new shape) compiles a new one."""

    @ppl.gen
    def sized(n):
        TRACES["sized"] += 1
        return ppl.sample("x", dist.Normal(0.0, 1.0).expand([n]))

    check_compiles_once(
        lambda: sized.simulate(jax.random.key(0), (n,)),
        lambda: sized.simulate(jax.random.key(1), (n,)),
    )
    assert traced_during(lambda: sized.simulate(jax.random.key(0), (n + 1,))) > 0


def test_python_number_observations_are_data_not_static():
    count = [0]

    @ppl.gen
    def model():
        count[0] += 1
        return ppl.sample("s", dist.Normal(0.0, 1.0))

    def run(value):
        model.generate(jax.random.key(0), {"s": value}, ())
        ppl.inference.importance(jax.random.key(0), model, (), {"s": value}, 10)

    run(1.0)
    after_first = count[0]
    run(2.0)
    run(3.0)
    assert count[0] == after_first  # new observed values do not retrace


def body_runs_during(fn):
    before = TRACES["model"]
    fn()
    return TRACES["model"] - before


EDITS = {
    "update": lambda model, trace: model.update(jax.random.key(1), trace, {"flag": jnp.array(1, jnp.int32)}, (XS + 1.0,))[0],
    "regenerate": lambda model, trace: model.regenerate(jax.random.key(1), trace, ppl.select("slope"), (XS,))[0],
    "regenerate, switch": lambda model, trace: model.regenerate(jax.random.key(1), trace, ppl.select("flag"), (XS,))[0],
    "regenerate, independent": lambda model, trace: model.regenerate(
        jax.random.key(1), trace, ppl.select("slope", "flag"), trace.args
    )[0],
}


@pytest.mark.parametrize("name", list(EDITS))
def test_update_and_regenerate_run_the_model_once(name):
    """A trace keeps which choices were made, and regenerate scores a redrawn
    choice's old value in the new run when its parents have not moved, so
    update and regenerate run the model body once, on the new trace, not again
    on the old one. (A trace built by hand is scored once more.)"""
    model, edit = make_model(), EDITS[name]
    trace = model.simulate(jax.random.key(0), (XS,))
    assert body_runs_during(lambda: edit(model, trace)) == 1
    again = edit(model, trace)  # a trace made by update/regenerate keeps what the next edit needs too
    assert body_runs_during(lambda: edit(model, again)) == 0  # and compiles to the same program
    by_hand = ppl.Trace(trace.choices, trace.retval, trace.args, trace.log_density)
    assert body_runs_during(lambda: edit(model, by_hand)) == 2


def test_regenerate_scores_the_old_trace_when_a_redrawn_choices_parent_moves():
    """Redrawing "slope" and the chain (whose steps depend on each other
    through the carry) moves parents of redrawn choices: the new run cannot
    score their old values, so regenerate runs the model on the old trace too."""
    model = make_model()
    trace = model.simulate(jax.random.key(0), (XS,))
    regenerate = lambda: model.regenerate(jax.random.key(1), trace, ppl.select("slope", "chain"), trace.args)
    assert body_runs_during(regenerate) == 2
