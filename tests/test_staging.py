"""Staged programs: every random choice is a sample_p equation, and running a
staged program back agrees with direct execution on choices, densities and
weights."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import ppl
from ppl import dist
from ppl.sample_primitive import bind_sample
from ppl.transforms import choice_sites, run_staged, sample_sites, stage


@ppl.gen
def inlier(x):
    return ppl.sample("y", dist.Normal(x, 0.1))


@ppl.gen
def outlier(x):
    scale = ppl.sample("s", dist.HalfNormal(1.0))
    ppl.factor("f", -scale)
    return ppl.sample("y", dist.Normal(0.0, 10.0 * scale))


@ppl.gen
def point(x):
    is_outlier = ppl.sample("o", dist.Bernoulli(0.3))
    return ppl.sample("v", ppl.cond(is_outlier, outlier, inlier, x))


@ppl.gen
def step(carry, x):
    z = ppl.sample("z", dist.Normal(0.9 * carry + x, 1.0))
    ppl.sample("w", point(z))
    return z, z * 2


@ppl.gen
def inner_vmap_step(carry, x):
    zs = ppl.sample("zs", dist.Normal(carry, 1.0).expand([2]))
    ws = ppl.sample("ws", point.vmap()(zs))
    return jnp.mean(ws), zs


@ppl.gen
def nested(x):
    a = ppl.sample("a", dist.Gamma(2.0, 3.0))
    ppl.sample("sub", point(x * a))
    return ppl.sample("c", dist.Dirichlet(jnp.ones(3) * a))


MODELS = {
    "cond": (point, (1.0,)),
    "vmap_cond": (point.vmap(), (jnp.arange(4.0),)),
    "scan": (step.scan(), (0.0, jnp.arange(5.0))),
    "vmap_of_scan": (step.scan().vmap(in_axes=(0, None)), (jnp.arange(3.0), jnp.arange(5.0))),
    "scan_of_vmap": (inner_vmap_step.scan(), (0.0, jnp.arange(4.0))),
    "nested_repeat": (nested.repeat(3), (0.5,)),
    "mixture": (ppl.mixture([dist.Normal(0.0, 1.0), dist.Normal(5.0, 2.0)]), (jnp.array([0.4, 0.6]),)),
    "mixture_of_gfs": (ppl.mixture([inlier, outlier]).vmap(in_axes=(None, 0)), (jnp.array([0.4, 0.6]), jnp.arange(3.0))),
}


def close(a, b):
    return jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.allclose(x, y, rtol=1e-5, atol=1e-5)), a, b))


@pytest.mark.parametrize("name", MODELS)
def test_staged_simulate_matches_direct(name):
    model, args = MODELS[name]
    key = jax.random.key(7)
    trace = model.simulate(key, args)
    run = run_staged(stage(model, args), key, args)
    assert close(run.choices, trace.choices)
    assert close(run.retval, trace.retval)
    assert jnp.allclose(run.log_density, trace.log_density, rtol=1e-5)
    # nothing constrained: the weight is the factors' total, as in generate
    assert jnp.allclose(run.log_weight, model.generate(key, {}, args)[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_staged_generate_and_assess_match_direct(name):
    model, args = MODELS[name]
    trace = model.simulate(jax.random.key(1), args)
    program = stage(model, args)
    # assess: everything constrained
    run = run_staged(program, jax.random.key(2), args, trace.choices)
    assert jnp.allclose(run.log_density, model.assess(trace.choices, args)[0], rtol=1e-5)
    # generate with part of the choices constrained
    first = sorted(trace.choices)[0] if isinstance(trace.choices, dict) else None
    constraints = {first: trace.choices[first]}
    new_trace, weight = model.generate(jax.random.key(3), constraints, args)
    run = run_staged(program, jax.random.key(3), args, constraints)
    assert close(run.choices, new_trace.choices)
    assert jnp.allclose(run.log_weight, weight, rtol=1e-5, atol=1e-5)
    assert jnp.allclose(run.log_density, new_trace.log_density, rtol=1e-5)


def test_every_choice_is_a_sample_primitive_with_address_and_distribution():
    model, args = MODELS["vmap_of_scan"]
    program = stage(model, args)
    sites = sample_sites(program.jaxpr.jaxpr)
    addresses = {s.params["address"] for s in sites}
    assert addresses == {("z",), ("w", "o"), ("w", "v", "s"), ("w", "v", "y")}
    normal = next(s for s in sites if s.params["address"] == ("z",))
    rebuilt = normal.params["spec"].rebuild([jnp.zeros(()), jnp.ones(())])
    assert isinstance(rebuilt, dist.Normal)
    assert [s.params["address"] for s in choice_sites(program.jaxpr.jaxpr) if s not in sites] == [("w", "v", "f")]


def test_staged_program_keeps_control_flow_of_combinators():
    program = stage(*MODELS["scan"])
    names = {e.primitive.name for e in program.jaxpr.jaxpr.eqns}
    assert "scan" in names
    body = next(e for e in program.jaxpr.jaxpr.eqns if e.primitive.name == "scan").params["jaxpr"].jaxpr
    assert "cond" in {e.primitive.name for e in body.eqns}


def test_staged_program_runs_as_plain_jax():
    model, args = MODELS["scan"]
    choices, retval = stage(model, args)(jax.random.key(4), args)
    assert close(choices, model.simulate(jax.random.key(4), args).choices)


def test_interpreter_inlines_nested_jit():
    @ppl.gen
    def model():
        a = ppl.sample("a", dist.Normal(0.0, 1.0))
        return jax.jit(lambda v: v * 2.0)(a)

    program = stage(model, ())
    trace = model.simulate(jax.random.key(0), ())
    assert close(run_staged(program, jax.random.key(0), ()).choices, trace.choices)
    # a staged program nested in a jit is interpreted through the jit
    closed = jax.make_jaxpr(lambda k: jax.jit(lambda kk: model.simulate(kk, ()).retval)(k))(jax.random.key(0))
    assert any(e.primitive.name in ("jit", "pjit") for e in closed.jaxpr.eqns)
    from ppl.transforms import Recorder, interpret

    recorder = Recorder({("a",): jnp.array(0.25)})
    (out,) = interpret(closed.jaxpr, closed.consts, [jax.random.key(0)], recorder)
    assert jnp.allclose(out, 0.5)
    assert jnp.allclose(recorder.log_density, dist.Normal(0.0, 1.0).log_prob(0.25))


@pytest.mark.parametrize("name", ["scan", "vmap_of_scan", "scan_of_vmap", "cond"])
def test_a_recorder_subclass_sees_the_choices_inside_scan_and_cond(name):
    from ppl.transforms import Recorder, interpret

    class Addresses(Recorder):
        def sample(self, site):
            self.seen.add(site.address)
            return super().sample(site)

    model, args = MODELS[name]
    program = stage(model, args)
    recorder = Addresses({})
    recorder.seen = set()
    dynamic, _ = ppl.trace.split_static(tuple(args))
    interpret(program.jaxpr.jaxpr, program.jaxpr.consts, [jax.random.key(0), *dynamic], recorder)
    assert recorder.seen == {site.params["address"] for site in sample_sites(program.jaxpr.jaxpr)}


def test_interpreter_names_unsupported_primitive():
    def body(carry):
        i, x = carry
        return i + 1, x + bind_sample(jax.random.key(0), dist.Normal(0.0, 1.0), ("x",))

    closed = jax.make_jaxpr(lambda: lax.while_loop(lambda c: c[0] < 3, body, (0, 0.0)))()
    from ppl.transforms import Recorder, interpret

    with pytest.raises(ppl.ControlFlowError, match=r"while.*gf.scan"):
        interpret(closed.jaxpr, closed.consts, [], Recorder({}))
