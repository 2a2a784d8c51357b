"""The generative function interface, checked against independent reference
densities (tests/models.py) on every shared model.

Notation: for a trace t, p(t) is the product of every choice's density given
its parents (and every factor). The laws:

- simulate/assess: trace.log_density == log p(t) == assess(t.choices).
- generate: log_weight == log p(t) - log q(drawn), where q draws the
  unconstrained choices from the model, i.e. the sum of the constrained
  choices' (and factors') log densities.
- update: log_weight == log p(t') - log p(t) - log q(fresh), fresh being the
  choices t' makes that t did not (a branch switched on).
- regenerate: log_weight == [log p(t') - log p(t)] - log q(redrawn in t')
  + log q(redrawn in t), the Metropolis-Hastings ratio of the proposal that
  redraws the selected choices from the model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from models import CASES, CASES_BY_NAME, nested, robust_point

IDS = [case.name for case in CASES]
BRANCHING = ("cond", "cond_vmap", "switch")


X64 = jax.config.jax_enable_x64  # test_x64.py runs this file again with float64 on


def close(actual, expected):
    if X64 and jnp.issubdtype(jnp.result_type(actual), jnp.floating):
        assert jnp.result_type(actual) == jnp.float64, jnp.result_type(actual)
    tolerance = dict(rtol=1e-12, atol=1e-12) if X64 else dict(rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **tolerance)


def under(address, addresses):
    return any(address == a or address.startswith(a + "/") for a in addresses)


def pick(choices, addresses):
    return ppl.unflatten({a: v for a, v in ppl.flatten(choices).items() if under(a, addresses)})


def total(sites):
    return sum(jnp.sum(jnp.where(site.used, site.log_density, 0.0)) for site in sites.values())


def masked_sum(sites, mask_fn):
    """Sum of the site log densities over the elements where ``mask_fn(address) `` holds."""
    return sum(jnp.sum(jnp.where(mask_fn(address), site.log_density, 0.0)) for address, site in sites.items())


# ----- simulate and assess ----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_simulate_density_matches_reference_and_assess(case):
    trace = case.gf.simulate(jax.random.key(1), case.args)
    assert set(ppl.flatten(trace.choices)) == set(case.reference(trace.choices, case.args))
    close(trace.log_density, total(case.reference(trace.choices, case.args)))
    log_density, retval = case.gf.assess(trace.choices, case.args)
    close(log_density, trace.log_density)
    jax.tree.map(close, retval, trace.retval)


# ----- generate ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_generate_weight_is_density_of_constrained_choices(case):
    source = case.gf.simulate(jax.random.key(1), case.args)
    constraints = pick(source.choices, case.observed)
    trace, log_weight = case.gf.generate(jax.random.key(2), constraints, case.args)
    for address, value in ppl.flatten(constraints).items():
        close(ppl.get(trace.choices, address), value)
    sites = case.reference(trace.choices, case.args)
    fixed = lambda a: under(a, case.observed + case.factors)
    log_q = masked_sum(sites, lambda a: jnp.logical_and(sites[a].used, not fixed(a)))
    close(trace.log_density, total(sites))
    close(log_weight, case.gf.assess(trace.choices, case.args)[0] - log_q)
    close(log_weight, masked_sum(sites, lambda a: jnp.logical_and(sites[a].used, fixed(a))))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_generate_everything_constrained_weighs_the_whole_density(case):
    source = case.gf.simulate(jax.random.key(1), case.args)
    everything = {a: v for a, v in ppl.flatten(source.choices).items() if not under(a, case.factors)}
    trace, log_weight = case.gf.generate(jax.random.key(2), ppl.unflatten(everything), case.args)
    close(log_weight, source.log_density)
    close(trace.log_density, source.log_density)
    jax.tree.map(close, trace.choices, source.choices)


@pytest.mark.parametrize("name", ["factor", "cond_vmap"])
def test_generate_nothing_constrained_weighs_only_factors(name):
    case = CASES_BY_NAME[name]
    trace, log_weight = case.gf.generate(jax.random.key(2), {}, case.args)
    sites = case.reference(trace.choices, case.args)
    expected = masked_sum(sites, lambda a: under(a, case.factors))  # factors are always observed
    close(log_weight, expected)
    assert (float(expected) != 0.0) == bool(case.factors)


# ----- update -----------------------------------------------------------------


def check_update(case, old, new, log_weight, discard, constraints, new_args):
    old_sites = case.reference(old.choices, case.args)
    new_sites = case.reference(new.choices, new_args)
    fresh = masked_sum(
        new_sites,
        lambda a: jnp.logical_and(new_sites[a].used, jnp.logical_not(old_sites[a].used)) & (not under(a, constraints)),
    )
    close(new.log_density, total(new_sites))
    close(log_weight, total(new_sites) - total(old_sites) - fresh)
    old_flat, new_flat = ppl.flatten(old.choices), ppl.flatten(new.choices)
    for address, value in ppl.flatten(discard).items():
        assert under(address, constraints), f"discard holds {address}, which was not overwritten"
        close(value, old_flat[address])
    for address in old_flat:
        if under(address, constraints):
            assert ppl.get(discard, address) is not None
        elif not under(address, case.factors):  # kept where made both times
            kept = jnp.logical_and(old_sites[address].used, new_sites[address].used)
            close(jnp.where(kept, new_flat[address], 0), jnp.where(kept, old_flat[address], 0))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_constraints_and_arguments(case):
    old = case.gf.simulate(jax.random.key(1), case.args)
    other = case.gf.simulate(jax.random.key(3), case.update_args)
    constraints = pick(other.choices, case.update_constraints)
    new, log_weight, discard = case.gf.update(jax.random.key(4), old, constraints, case.update_args)
    for address, value in ppl.flatten(constraints).items():
        close(ppl.get(new.choices, address), value)
    check_update(case, old, new, log_weight, discard, case.update_constraints, case.update_args)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_arguments_only_is_plain_density_difference(case):
    old = case.gf.simulate(jax.random.key(1), case.args)
    new, log_weight, discard = case.gf.update(jax.random.key(4), old, {}, case.update_args)
    jax.tree.map(close, new.choices, old.choices)
    assert discard == {}
    expected = total(case.reference(new.choices, case.update_args)) - total(case.reference(old.choices, case.args))
    close(log_weight, expected)


@pytest.mark.parametrize("name", BRANCHING)
def test_update_switching_branches_batched(name):
    """Over 16 traces, constraining the branch index switches branches on and
    off; the fresh choices of a branch switched on are drawn, and weigh."""
    case = CASES_BY_NAME[name]
    keys = jax.random.split(jax.random.key(7), 16)
    old = jax.vmap(lambda k: case.gf.simulate(k, case.args))(keys)
    other = jax.vmap(lambda k: case.gf.simulate(k, case.update_args))(jax.random.split(jax.random.key(8), 16))
    constraints = pick(other.choices, case.update_constraints)
    new, log_weight, discard = jax.vmap(lambda k, t, c: case.gf.update(k, t, c, case.update_args))(
        keys, old, constraints
    )
    switched_on = switched_off = False
    for i in range(16):
        discard_i = jax.tree.map(lambda x: x[i], discard)
        check_update(case, old[i], new[i], log_weight[i], discard_i, case.update_constraints, case.update_args)
        old_used = {a: s.used for a, s in case.reference(old[i].choices, case.args).items()}
        new_used = {a: s.used for a, s in case.reference(new[i].choices, case.update_args).items()}
        switched_on |= any(bool(jnp.any(new_used[a] & ~jnp.asarray(old_used[a]))) for a in old_used)
        switched_off |= any(bool(jnp.any(~jnp.asarray(new_used[a]) & old_used[a])) for a in old_used)
    assert switched_on and switched_off  # both directions were exercised


def test_update_flips_cond_branch_hand_computed():
    x = 1.5
    inlier_trace, _ = robust_point.generate(jax.random.key(0), {"o": 0}, (x,))
    y = inlier_trace.choices["v"]["y"]
    # inlier -> outlier: "s" is fresh, drawn from its prior, and does not weigh.
    outlier_trace, log_weight, discard = robust_point.update(jax.random.key(1), inlier_trace, {"o": 1}, (x,))
    s = outlier_trace.choices["v"]["s"]
    assert float(s) > 0.0
    close(outlier_trace.choices["v"]["y"], y)
    expected = (
        dist.Bernoulli(0.3).log_prob(1)
        + dist.Normal(x, 1.0 + s).log_prob(y)
        - dist.Bernoulli(0.3).log_prob(0)
        - dist.Normal(x, 0.5).log_prob(y)
    )
    close(log_weight, expected)
    assert set(ppl.flatten(discard)) == {"o"} and int(discard["o"]) == 0
    # outlier -> inlier: "s" is dropped; the weight is the plain density difference.
    back, log_weight, discard = robust_point.update(jax.random.key(2), outlier_trace, {"o": 0}, (x,))
    close(log_weight, inlier_trace.log_density - outlier_trace.log_density)
    close(back.log_density, inlier_trace.log_density)
    assert int(discard["o"]) == 1


def test_update_discard_holds_overwritten_values():
    old = nested.simulate(jax.random.key(0), (0.5,))
    new, _, discard = nested.update(jax.random.key(1), old, {"sub": {"a": 0.25}, "y": 1.0}, (0.5,))
    assert set(ppl.flatten(discard)) == {"sub/a", "y"}
    close(discard["sub"]["a"], old.choices["sub"]["a"])
    close(discard["y"], old.choices["y"])
    close(new.choices["sub"]["a"], 0.25)
    close(new.choices["mu"], old.choices["mu"])


# ----- regenerate -------------------------------------------------------------


def check_regenerate(case, old, new, log_weight, new_args=None):
    new_args = case.args if new_args is None else new_args
    old_sites, new_sites = case.reference(old.choices, case.args), case.reference(new.choices, new_args)
    selected = lambda a: under(a, case.selection)
    drawn = masked_sum(new_sites, lambda a: new_sites[a].used & (selected(a) | ~jnp.asarray(old_sites[a].used)))
    moved = masked_sum(old_sites, lambda a: old_sites[a].used & (selected(a) | ~jnp.asarray(new_sites[a].used)))
    close(new.log_density, total(new_sites))
    close(log_weight, total(new_sites) - total(old_sites) - drawn + moved)
    old_flat, new_flat = ppl.flatten(old.choices), ppl.flatten(new.choices)
    for address in old_flat:
        if not selected(address) and not under(address, case.factors):
            kept = jnp.logical_and(old_sites[address].used, new_sites[address].used)
            close(jnp.where(kept, new_flat[address], 0), jnp.where(kept, old_flat[address], 0))
    return any(bool(jnp.any(new_flat[a] != old_flat[a])) for a in old_flat if selected(a))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_regenerate_weight_is_metropolis_hastings_ratio(case):
    old = case.gf.simulate(jax.random.key(1), case.args)
    keys = jax.random.split(jax.random.key(5), 8)
    selection = ppl.select(*case.selection)
    changed = False
    for key in keys:
        new, log_weight = case.gf.regenerate(key, old, selection, case.args)
        changed |= check_regenerate(case, old, new, log_weight)
    assert changed  # some selected choice was actually redrawn


# Several addresses: redrawn choices whose parents also move (the new run
# cannot score their old values, so regenerate scores the old trace), redrawn
# choices with fixed parents (scored in the new run), inside switch branches
# entered with or without a moved index, and inside a scan (the carry).
SEVERAL = [
    ("nested", ("mu", "sub/a")),
    ("nested", ("mu", "y")),
    ("scan", ("chain/z",)),
    ("scan", ("rho", "z0")),
    ("cond", ("v/s",)),
    ("cond", ("o", "v/s")),
    ("cond_vmap", ("slope", "points/o")),
    ("cond_vmap", ("points/v/y",)),
    ("cond_vmap", ("slope", "points/v/y")),
    ("switch", ("k", "v/a")),
    ("switch", ("k", "v/y")),
    ("mixture", ("logit", "x/component")),
]


@pytest.mark.parametrize("name, selection", SEVERAL, ids=[f"{n}:{'+'.join(s)}" for n, s in SEVERAL])
def test_regenerate_weight_with_other_selections(name, selection):
    case = CASES_BY_NAME[name]._replace(selection=selection)
    keys = jax.random.split(jax.random.key(13), 8)
    old = jax.vmap(lambda k: case.gf.simulate(k, case.args))(keys)
    new, log_weight = jax.vmap(lambda k, t: case.gf.regenerate(k, t, ppl.select(*selection), t.args))(
        jax.random.split(jax.random.key(14), 8), old
    )
    changed = False
    for i in range(8):
        changed |= check_regenerate(case, old[i], new[i], log_weight[i])
    assert changed


@pytest.mark.parametrize("name", ["nested", "vmap", "cond_vmap"])
def test_regenerate_with_new_arguments(name):
    """New arguments may move every choice's parents: the weight counts the
    densities under the new arguments against the old ones."""
    case = CASES_BY_NAME[name]
    old = case.gf.simulate(jax.random.key(1), case.args)
    new, log_weight = case.gf.regenerate(jax.random.key(2), old, ppl.select(*case.selection), case.update_args)
    check_regenerate(case, old, new, log_weight, case.update_args)


@pytest.mark.parametrize("name", BRANCHING)
def test_regenerate_switching_branches_batched(name):
    case = CASES_BY_NAME[name]
    keys = jax.random.split(jax.random.key(9), 16)
    old = jax.vmap(lambda k: case.gf.simulate(k, case.args))(keys)
    selection = ppl.select(*case.selection)
    new, log_weight = jax.vmap(lambda k, t: case.gf.regenerate(k, t, selection, case.args))(
        jax.random.split(jax.random.key(10), 16), old
    )
    for i in range(16):
        check_regenerate(case, old[i], new[i], log_weight[i])


def test_regenerate_hand_computed():
    """Redrawing "mu" of ``nested``: prior terms cancel, leaving the ratio of
    the density of its child sub/a under the new and the old mu."""
    old = nested.simulate(jax.random.key(0), (0.5,))
    new, log_weight = nested.regenerate(jax.random.key(1), old, ppl.select("mu"), (0.5,))
    a = old.choices["sub"]["a"]
    assert float(new.choices["mu"]) != float(old.choices["mu"])
    close(new.choices["sub"]["a"], a)
    close(log_weight, dist.Normal(new.choices["mu"], 1.0).log_prob(a) - dist.Normal(old.choices["mu"], 1.0).log_prob(a))


def test_regenerate_nothing_selected_is_identity():
    case = CASES_BY_NAME["cond_vmap"]
    old = case.gf.simulate(jax.random.key(1), case.args)
    new, log_weight = case.gf.regenerate(jax.random.key(2), old, ppl.select(), case.args)
    jax.tree.map(close, new.choices, old.choices)
    close(log_weight, 0.0)


def test_regenerate_needs_a_selection():
    old = nested.simulate(jax.random.key(0), (0.5,))
    with pytest.raises(TypeError, match="ppl.select"):
        nested.regenerate(jax.random.key(1), old, "mu", (0.5,))


# ----- traces that keep no sites ----------------------------------------------


@pytest.mark.parametrize("name", ["nested", "scan", "cond_vmap", "mixture"])
def test_a_trace_built_by_hand_edits_like_a_gfi_trace(name):
    """A trace made of its four public fields keeps no per-choice record
    (importance sampling's particles do not either): update and regenerate
    score it once and give the same results."""
    case = CASES_BY_NAME[name]
    trace = case.gf.simulate(jax.random.key(1), case.args)
    by_hand = ppl.Trace(trace.choices, trace.retval, trace.args, trace.log_density)
    constraints = pick(case.gf.simulate(jax.random.key(3), case.update_args).choices, case.update_constraints)
    selection = ppl.select(*case.selection)
    for edit in (
        lambda t: case.gf.update(jax.random.key(4), t, constraints, case.update_args)[:2],
        lambda t: case.gf.regenerate(jax.random.key(5), t, selection, case.args),
    ):
        (kept, kept_weight), (hand, hand_weight) = edit(trace), edit(by_hand)
        jax.tree.map(close, hand.choices, kept.choices)
        close(hand.log_density, kept.log_density)
        close(hand_weight, kept_weight)


@ppl.gen
def spread(x):
    s = ppl.sample("s", dist.HalfNormal(1.0))
    return ppl.sample("y", dist.Normal(x, 1.0 + s))


@ppl.gen
def tight(x):
    return ppl.sample("y", dist.Normal(x, 0.5))


@ppl.gen
def element(x, switching):
    if not switching:  # a Python argument: "v/s" is always made
        return ppl.sample("v", spread(x))
    flag = ppl.sample("flag", dist.Bernoulli(0.5))
    return ppl.sample("v", ppl.cond(flag, spread, tight, x))


@ppl.gen
def elements(xs, switching):
    return ppl.sample("points", element.vmap(in_axes=(0, None))(xs, switching))


def test_regenerate_with_arguments_that_change_which_choices_are_made():
    """New Python arguments put "points/v/s", always made before, under a
    switch: each element's new flag may drop it, and "points/flag" is new. The
    MH ratio counts the dropped old densities and the new choices' densities."""
    xs = jnp.linspace(-1.0, 1.0, 8)
    old = elements.simulate(jax.random.key(0), (xs, False))
    new, log_weight = elements.regenerate(jax.random.key(1), old, ppl.select("points/v/y"), (xs, True))
    flag = new.choices["points"]["flag"]
    assert 0 < int(flag.sum()) < 8  # some elements drop "s", some keep it
    old_sites = ppl.flatten(ppl.site_log_densities(elements, old.choices, (xs, False)))
    new_sites = ppl.flatten(ppl.site_log_densities(elements, new.choices, (xs, True)))
    drawn = new_sites["points/flag"] + new_sites["points/v/y"]  # flag: no old value; y: selected
    moved = old_sites["points/v/y"] + jnp.where(flag, 0.0, old_sites["points/v/s"])
    expected = new.log_density - old.log_density - drawn.sum() + moved.sum()
    close(log_weight, expected)
    close(new.log_density, elements.assess(new.choices, (xs, True))[0])


# ----- jit, vmap, keys --------------------------------------------------------


# "positive" is left out: its Beta sampler is slow to compile under vmap, and
# test_distributions.py runs every family vectorised.
@pytest.mark.parametrize("case", [c for c in CASES if c.name != "positive"], ids=[n for n in IDS if n != "positive"])
def test_simulate_and_assess_under_jit_and_vmap_match_eager(case):
    keys = jax.random.split(jax.random.key(11), 3)
    batched = jax.jit(jax.vmap(lambda k: case.gf.simulate(k, case.args)))(keys)
    for i, key in enumerate(keys):
        eager = case.gf.simulate(key, case.args)
        jax.tree.map(close, batched[i].choices, eager.choices)
        close(batched.log_density[i], eager.log_density)
    log_densities = jax.vmap(lambda c: case.gf.assess(c, case.args)[0])(batched.choices)
    close(log_densities, batched.log_density)


@pytest.mark.parametrize("name", ["nested", "scan", "cond_vmap", "switch", "mixture"])
def test_generate_update_regenerate_under_jit_match_eager(name):
    case = CASES_BY_NAME[name]
    old = case.gf.simulate(jax.random.key(1), case.args)
    constraints = pick(case.gf.simulate(jax.random.key(3), case.args).choices, case.observed)
    moved = pick(case.gf.simulate(jax.random.key(3), case.update_args).choices, case.update_constraints)
    selection = ppl.select(*case.selection)

    def all_three(key, trace, constraints, moved):
        keys = jax.random.split(key, 3)
        return (
            case.gf.generate(keys[0], constraints, case.args),
            case.gf.update(keys[1], trace, moved, case.update_args)[:2],
            case.gf.regenerate(keys[2], trace, selection, case.args),
        )

    jitted = jax.jit(all_three)(jax.random.key(12), old, constraints, moved)
    eager = all_three(jax.random.key(12), old, constraints, moved)
    for (jit_trace, jit_weight), (eager_trace, eager_weight) in zip(jitted, eager):
        jax.tree.map(close, jit_trace.choices, eager_trace.choices)
        close(jit_weight, eager_weight)


def test_regenerate_under_disable_jit_matches_jit():
    """Eagerly (no tracers to tell which parameters depend on a redrawn choice),
    regenerate scores the old trace and gives the same result."""
    case = CASES_BY_NAME["cond_vmap"]
    old = case.gf.simulate(jax.random.key(1), case.args)
    selection = ppl.select("slope", "points/o")
    jitted = case.gf.regenerate(jax.random.key(2), old, selection, case.args)
    with jax.disable_jit():
        eager = case.gf.regenerate(jax.random.key(2), old, selection, case.args)
    jax.tree.map(close, eager[0].choices, jitted[0].choices)
    close(eager[1], jitted[1])


def test_traced_array_arguments_under_jit():
    case = CASES_BY_NAME["vmap"]
    simulate = jax.jit(lambda k, xs: case.gf.simulate(k, (xs,)))
    trace = simulate(jax.random.key(0), case.args[0])
    close(trace.log_density, total(case.reference(trace.choices, case.args)))
    new_xs = case.update_args[0]
    new, log_weight, _ = jax.jit(lambda t, xs: case.gf.update(jax.random.key(1), t, {}, (xs,)))(trace, new_xs)
    expected = total(case.reference(trace.choices, (new_xs,))) - total(case.reference(trace.choices, case.args))
    close(log_weight, expected)


def test_typed_and_raw_keys_give_the_same_draws():
    case = CASES_BY_NAME["cond_vmap"]
    typed, raw = jax.random.key(3), jax.random.PRNGKey(3)
    a, b = case.gf.simulate(typed, case.args), case.gf.simulate(raw, case.args)
    jax.tree.map(np.testing.assert_array_equal, a.choices, b.choices)
    constraints = pick(a.choices, case.observed)
    (ta, wa), (tb, wb) = case.gf.generate(typed, constraints, case.args), case.gf.generate(raw, constraints, case.args)
    jax.tree.map(np.testing.assert_array_equal, ta.choices, tb.choices)
    close(wa, wb)
    selection = ppl.select(*case.selection)
    ra, rb = case.gf.regenerate(typed, a, selection, case.args), case.gf.regenerate(raw, a, selection, case.args)
    jax.tree.map(np.testing.assert_array_equal, ra[0].choices, rb[0].choices)
    ua = case.gf.update(typed, a, {}, case.update_args)
    ub = case.gf.update(raw, a, {}, case.update_args)
    close(ua[1], ub[1])
    # vmap over a batch of raw keys works as over typed keys.
    raw_keys = jax.random.split(jax.random.PRNGKey(3), 4)
    batched = jax.vmap(lambda k: case.gf.simulate(k, case.args))(raw_keys)
    assert batched.choices["points"]["o"].shape == (4, 6)


@ppl.gen
def twins():
    first = ppl.sample("first", dist.Normal(0.0, 1.0))
    second = ppl.sample("second", dist.Normal(0.0, 1.0))
    return ppl.sample("inner", ppl.as_gen(dist.Normal(0.0, 1.0))()), first, second


def test_keys_differ_across_calls_and_addresses():
    a = twins.simulate(jax.random.key(0), ())
    b = twins.simulate(jax.random.key(1), ())
    assert float(a.choices["first"]) != float(b.choices["first"])
    values = [float(a.choices[name]) for name in ("first", "second", "inner")]
    assert len(set(values)) == 3  # same distribution, different addresses: different draws


@ppl.gen
def shaped(n, link_fn, kind):
    scale = ppl.sample("scale", dist.HalfNormal(1.0))
    x = ppl.sample("x", dist.Normal(0.0, link_fn(scale)).expand([n]))
    if kind == "sum":  # Python control flow on a string argument
        return x.sum()
    return x


def test_python_arguments_stay_python_values():
    trace = shaped.simulate(jax.random.key(0), (3, jnp.exp, "sum"))
    assert trace.choices["x"].shape == (3,)
    assert trace.retval.shape == ()
    assert trace.args[0] == 3 and trace.args[2] == "sum" and trace.args[1] is jnp.exp
    scale = trace.choices["scale"]
    x_density = dist.Normal(0.0, jnp.exp(scale)).log_prob(trace.choices["x"]).sum()
    expected = dist.HalfNormal(1.0).log_prob(scale) + x_density
    close(trace.log_density, expected)

    new, log_weight = shaped.generate(jax.random.key(1), {"x": jnp.ones(5)}, (5, jnp.exp, "all"))
    assert new.retval.shape == (5,)
    close(log_weight, dist.Normal(0.0, jnp.exp(new.choices["scale"])).log_prob(jnp.ones(5)).sum())
    # A user's jit keeps them static too, and vmap over keys works with them.
    keys = jax.random.split(jax.random.key(2), 3)
    batched = jax.jit(jax.vmap(lambda k: shaped.simulate(k, (2, jnp.exp, "all"))))(keys)
    assert batched.choices["x"].shape == (3, 2)
    # update changing the Python int grows the choice; the weight counts the new shape.
    grown, log_weight, _ = shaped.update(jax.random.key(3), trace, {"x": jnp.zeros(4)}, (4, jnp.exp, "sum"))
    assert grown.choices["x"].shape == (4,)
    close(log_weight, grown.log_density - trace.log_density)


def test_a_kept_value_outside_the_new_support_weighs_minus_infinity():
    """update with new arguments keeps old values; one that the new
    distribution cannot produce makes the move impossible (under jit too)."""

    @ppl.gen
    def bounded(upper):
        return ppl.sample("u", dist.Uniform(0.0, upper))

    trace, _ = bounded.generate(jax.random.key(0), {"u": 1.5}, (2.0,))
    for update in (bounded.update, jax.jit(bounded.update)):
        _, weight, _ = update(jax.random.key(1), trace, {}, (1.0,))
        assert weight == -jnp.inf
        _, weight, _ = update(jax.random.key(1), trace, {}, (3.0,))
        assert np.isfinite(weight)
