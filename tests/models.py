"""Shared models for the GFI tests, each with an independent reference density.

Every model comes as a ``Case``: the generative function, its arguments, and a
``reference(choices, args)`` written directly with NumPyro's ``log_prob`` (no
ppl machinery) that returns, per flat address, a ``Site``: the log density of
each element (vmap/scan axes kept, event axes summed) and whether the element
was made in this execution (a ``ppl.cond`` branch not taken makes nothing).
The GFI laws in ``test_gfi_laws.py`` are checked against these references.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

import ppl
from ppl import dist

__all__ = ["Site", "Case", "CASES", "CASES_BY_NAME"]


class Site(NamedTuple):
    log_density: Any  # per element, event axes summed
    used: Any = True  # per element: was the choice made in this execution?


class Case(NamedTuple):
    name: str
    gf: Any
    args: tuple
    reference: Callable  # (choices, args) -> {flat address: Site}
    observed: tuple  # addresses constrained by generate
    update_constraints: tuple  # addresses update constrains to new values
    update_args: tuple  # the arguments update moves to
    selection: tuple  # addresses regenerate redraws
    factors: tuple = ()  # addresses of ppl.factor terms (always observed)


# ----- nested generative functions -------------------------------------------


@ppl.gen
def pair(loc):
    a = ppl.sample("a", dist.Normal(loc, 1.0))
    b = ppl.sample("b", dist.Normal(a, 0.5))
    return a + b


@ppl.gen
def nested(x):
    mu = ppl.sample("mu", dist.Normal(x, 2.0))
    total = ppl.sample("sub", pair(mu))
    return ppl.sample("y", dist.Normal(total, 1.0))


def nested_reference(c, args):
    (x,) = args
    a, b = c["sub"]["a"], c["sub"]["b"]
    return {
        "mu": Site(dist.Normal(x, 2.0).log_prob(c["mu"])),
        "sub/a": Site(dist.Normal(c["mu"], 1.0).log_prob(a)),
        "sub/b": Site(dist.Normal(a, 0.5).log_prob(b)),
        "y": Site(dist.Normal(a + b, 1.0).log_prob(c["y"])),
    }


# ----- vmap with in_axes ------------------------------------------------------


@ppl.gen
def point(x, coeffs):
    return ppl.sample("y", dist.Normal(coeffs[0] + coeffs[1] * x, 0.3))


@ppl.gen
def regression(xs):
    coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([2]))
    return ppl.sample("ys", point.vmap(in_axes=(0, None))(xs, coeffs))


def regression_reference(c, args):
    (xs,) = args
    coeffs = c["coeffs"]
    return {
        "coeffs": Site(dist.Normal(0.0, 1.0).log_prob(coeffs).sum()),
        "ys/y": Site(dist.Normal(coeffs[0] + coeffs[1] * xs, 0.3).log_prob(c["ys"]["y"])),
    }


# ----- repeat -----------------------------------------------------------------


@ppl.gen
def draw(scale):
    return ppl.sample("x", dist.Normal(0.0, scale))


@ppl.gen
def hierarchy():
    scale = ppl.sample("scale", dist.LogNormal(0.0, 0.5))
    return ppl.sample("xs", draw.repeat(4)(scale))


def hierarchy_reference(c, args):
    return {
        "scale": Site(dist.LogNormal(0.0, 0.5).log_prob(c["scale"])),
        "xs/x": Site(dist.Normal(0.0, c["scale"]).log_prob(c["xs"]["x"])),
    }


# ----- scan: an AR(1) chain carrying (state, coefficient) ---------------------


@ppl.gen
def ar_step(carry, drift):
    z, rho = carry
    z_new = ppl.sample("z", dist.Normal(rho * z + drift, 0.5))
    return (z_new, rho), z_new


@ppl.gen
def ar1(drifts):
    rho = ppl.sample("rho", dist.Uniform(-1.0, 1.0))
    z0 = ppl.sample("z0", dist.Normal(0.0, 1.0))
    (last, _), _ = ppl.sample("chain", ar_step.scan()((z0, rho), drifts))
    return ppl.sample("y", dist.Normal(last, 0.1))


def ar1_reference(c, args):
    (drifts,) = args
    rho, zs = c["rho"], c["chain"]["z"]
    previous = jnp.concatenate([c["z0"][None], zs[:-1]])
    return {
        "rho": Site(dist.Uniform(-1.0, 1.0).log_prob(rho)),
        "z0": Site(dist.Normal(0.0, 1.0).log_prob(c["z0"])),
        "chain/z": Site(dist.Normal(rho * previous + drifts, 0.5).log_prob(zs)),
        "y": Site(dist.Normal(zs[-1], 0.1).log_prob(c["y"])),
    }


# ----- cond: the outlier branch makes an extra choice "s" ---------------------


@ppl.gen
def inlier(x):
    return ppl.sample("y", dist.Normal(x, 0.5))


@ppl.gen
def outlier(x):
    s = ppl.sample("s", dist.HalfNormal(2.0))
    return ppl.sample("y", dist.Normal(x, 1.0 + s))


@ppl.gen
def robust_point(x):
    is_outlier = ppl.sample("o", dist.Bernoulli(0.3))
    return ppl.sample("v", ppl.cond(is_outlier, outlier, inlier, x))


def _robust_sites(c, x):
    o, s, y = c["o"], c["v"]["s"], c["v"]["y"]
    outlying = o == 1
    y_density = jnp.where(outlying, dist.Normal(x, 1.0 + s).log_prob(y), dist.Normal(x, 0.5).log_prob(y))
    return {
        "o": Site(dist.Bernoulli(0.3).log_prob(o)),
        "v/s": Site(jnp.where(outlying, dist.HalfNormal(2.0).log_prob(jnp.where(outlying, s, 1.0)), 0.0), outlying),
        "v/y": Site(y_density),
    }


def robust_point_reference(c, args):
    return _robust_sites(c, args[0])


@ppl.gen
def robust_regression(xs):
    slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
    return ppl.sample("points", robust_point.vmap()(slope * xs))


def robust_regression_reference(c, args):
    (xs,) = args
    sites = {"slope": Site(dist.Normal(0.0, 1.0).log_prob(c["slope"]))}
    for address, site in _robust_sites(c["points"], c["slope"] * xs).items():
        sites["points/" + address] = site
    return sites


# ----- switch with three branches making different choices --------------------


@ppl.gen
def branch_flat():
    return ppl.sample("y", dist.Normal(0.0, 1.0))


@ppl.gen
def branch_shift():
    a = ppl.sample("a", dist.Exponential(0.5))
    return ppl.sample("y", dist.Normal(a, 1.0))


@ppl.gen
def branch_pair():
    a = ppl.sample("a", dist.Exponential(0.5))
    c = ppl.sample("c", dist.Normal(0.0, 1.0).expand([2]))
    return ppl.sample("y", dist.Normal(a + c.sum(), 1.0))


@ppl.gen
def three_way():
    k = ppl.sample("k", dist.Categorical(jnp.array([0.2, 0.3, 0.5])))
    return ppl.sample("v", ppl.switch(k, [branch_flat, branch_shift, branch_pair]))


def three_way_reference(c, args):
    k, v = c["k"], c["v"]
    means = jnp.stack([0.0, v["a"], v["a"] + v["c"].sum()])
    return {
        "k": Site(dist.Categorical(jnp.array([0.2, 0.3, 0.5])).log_prob(k)),
        "v/a": Site(jnp.where(k >= 1, dist.Exponential(0.5).log_prob(jnp.where(k >= 1, v["a"], 1.0)), 0.0), k >= 1),
        "v/c": Site(jnp.where(k == 2, dist.Normal(0.0, 1.0).log_prob(v["c"]).sum(), 0.0), k == 2),
        "v/y": Site(dist.Normal(means[k], 1.0).log_prob(v["y"])),
    }


# ----- mixture ----------------------------------------------------------------

LOCS, SCALES = jnp.array([-2.0, 3.0]), jnp.array([1.0, 0.5])
two_bumps = ppl.mixture([dist.Normal(LOCS[0], SCALES[0]), dist.Normal(LOCS[1], SCALES[1])])


@ppl.gen
def mixture_model():
    logit = ppl.sample("logit", dist.Normal(0.0, 1.0))
    weights = jnp.stack([jax.nn.sigmoid(logit), jax.nn.sigmoid(-logit)])
    return ppl.sample("x", two_bumps.repeat(3)(weights))


def mixture_reference(c, args):
    logit, component, value = c["logit"], c["x"]["component"], c["x"]["value"]
    w = jnp.stack([jax.nn.sigmoid(logit), jax.nn.sigmoid(-logit)])
    return {
        "logit": Site(dist.Normal(0.0, 1.0).log_prob(logit)),
        "x/component": Site(dist.Categorical(w).log_prob(component)),
        "x/value": Site(dist.Normal(LOCS[component], SCALES[component]).log_prob(value)),
    }


# ----- ppl.factor ---------------------------------------------------------------


@ppl.gen
def penalised():
    mu = ppl.sample("mu", dist.Normal(0.0, 3.0))
    ppl.factor("penalty", jnp.stack([-0.5 * (mu - 1.0) ** 2, -0.1 * jnp.abs(mu)]))
    return ppl.sample("y", dist.Normal(mu, 1.0).expand([2]))


def penalised_reference(c, args):
    mu = c["mu"]
    return {
        "mu": Site(dist.Normal(0.0, 3.0).log_prob(mu)),
        "penalty": Site(-0.5 * (mu - 1.0) ** 2 - 0.1 * jnp.abs(mu)),
        "y": Site(dist.Normal(mu, 1.0).log_prob(c["y"]).sum()),
    }


# ----- constrained-support latents, asymmetric densities ----------------------


@ppl.gen
def positive():
    sigma = ppl.sample("sigma", dist.HalfNormal(2.0))
    p = ppl.sample("p", dist.Beta(2.0, 5.0))
    ppl.sample("y", dist.Normal(0.0, sigma).expand([3]))
    ppl.sample("k", dist.Bernoulli(p).expand([5]))
    return ppl.sample("t", dist.Exponential(1.0 + 4.0 * p).expand([2]))


def positive_reference(c, args):
    return {
        "sigma": Site(dist.HalfNormal(2.0).log_prob(c["sigma"])),
        "p": Site(dist.Beta(2.0, 5.0).log_prob(c["p"])),
        "y": Site(dist.Normal(0.0, c["sigma"]).log_prob(c["y"]).sum()),
        "k": Site(dist.Bernoulli(c["p"]).log_prob(c["k"]).sum()),
        "t": Site(dist.Exponential(1.0 + 4.0 * c["p"]).log_prob(c["t"]).sum()),
    }


def _case(name, gf, args, reference, *rest, **kwargs):
    # References are jitted: eager NumPyro log_probs compile op by op, far slower.
    return Case(name, gf, args, jax.jit(reference), *rest, **kwargs)


CASES = [
    _case("nested", nested, (0.5,), nested_reference, ("sub/b", "y"), ("sub/a",), (-1.0,), ("sub/a",)),
    _case(
        "vmap",
        regression,
        (jnp.linspace(-1.0, 1.0, 5),),
        regression_reference,
        ("ys/y",),
        ("coeffs",),
        (jnp.linspace(0.0, 2.0, 5),),
        ("coeffs",),
    ),
    _case("repeat", hierarchy, (), hierarchy_reference, ("xs/x",), ("scale",), (), ("scale",)),
    _case(
        "scan",
        ar1,
        (jnp.array([0.5, -0.2, 0.1, 0.3]),),
        ar1_reference,
        ("chain/z", "y"),
        ("rho",),
        (jnp.array([0.0, 1.0, -1.0, 0.2]),),
        ("z0",),
    ),
    _case("cond", robust_point, (1.5,), robust_point_reference, ("v/y",), ("o",), (1.5,), ("o",)),
    _case(
        "cond_vmap",
        robust_regression,
        (jnp.linspace(-2.0, 2.0, 6),),
        robust_regression_reference,
        ("points/v/y",),
        ("points/o",),
        (jnp.linspace(-1.0, 3.0, 6),),
        ("points/o",),
    ),
    _case("switch", three_way, (), three_way_reference, ("v/y",), ("k",), (), ("k",)),
    _case("mixture", mixture_model, (), mixture_reference, ("x/value",), ("x/component",), (), ("x/component",)),
    _case("factor", penalised, (), penalised_reference, ("y",), ("mu",), (), ("mu",), factors=("penalty",)),
    _case("positive", positive, (), positive_reference, ("y", "k", "t"), ("p",), (), ("p",)),
]

CASES_BY_NAME = {case.name: case for case in CASES}
