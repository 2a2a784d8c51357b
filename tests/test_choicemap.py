"""Choice maps (nested dicts), selections, and how traces print."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist

CHOICES = {"coeffs": jnp.arange(3.0), "ys": {"y": jnp.ones(4), "outlier": {"flag": jnp.array(True)}}, "z": 2.0}
FLAT = {
    "coeffs": CHOICES["coeffs"],
    "ys/y": CHOICES["ys"]["y"],
    "ys/outlier/flag": CHOICES["ys"]["outlier"]["flag"],
    "z": 2.0,
}


def test_flatten_and_unflatten_are_inverse():
    flat = ppl.flatten(CHOICES)
    assert list(flat) == list(FLAT)
    for address, value in FLAT.items():
        assert flat[address] is value
    assert jax.tree.structure(ppl.unflatten(flat)) == jax.tree.structure(CHOICES)
    assert ppl.unflatten({"a/b/c": 1, "a/d": 2, "e": 3}) == {"a": {"b": {"c": 1}, "d": 2}, "e": 3}
    assert ppl.flatten({}) == {}


def test_flatten_of_a_bare_value():
    """A distribution as a generative function has a bare value as its choices."""
    assert ppl.flatten(1.5) == {"<root>": 1.5}


def test_unflatten_rejects_nesting_under_a_leaf():
    with pytest.raises(ppl.AddressError, match="address 'a/b' nests under a leaf"):
        ppl.unflatten({"a": 1.0, "a/b": 2.0})


def test_merge():
    merged = ppl.merge({"a": 1, "s": {"x": 2}}, {"s": {"y": 3}}, None, {"b": 4})
    assert merged == {"a": 1, "s": {"x": 2, "y": 3}, "b": 4}
    with pytest.raises(ppl.AddressError, match="address 's/x' appears in more than one choice map"):
        ppl.merge({"s": {"x": 1}}, {"s": {"x": 2}})


def test_get():
    assert ppl.get(CHOICES, "ys/y") is CHOICES["ys"]["y"]
    assert ppl.get(CHOICES, ("ys", "outlier", "flag")) is CHOICES["ys"]["outlier"]["flag"]
    assert ppl.get(CHOICES, "ys") is CHOICES["ys"]
    assert ppl.get(CHOICES, "ys/nope") is None
    assert ppl.get(CHOICES, "z/deeper") is None  # below a leaf


def test_selection_contains_sub_and_everything():
    selection = ppl.select("coeffs", "ys/outlier", ("a", "b"))
    assert selection.contains("coeffs") and selection.contains(("coeffs",))
    assert selection.contains("ys/outlier/flag")  # selecting an address selects what is under it
    assert not selection.contains("ys/y") and not selection.contains("ys")
    assert selection.contains("a/b") and not selection.contains("a")
    assert selection.sub("ys").contains("outlier") and not selection.sub("ys").everything
    assert selection.sub("coeffs").everything
    assert not selection.sub("z")
    assert ppl.select_all().contains("anything/at/all") and ppl.select_all().sub("x").everything
    assert not ppl.select() and ppl.select("a") and ppl.select_all()


def test_selection_equality_and_hash():
    assert ppl.select("a/b", "c") == ppl.select(("a", "b"), "c") == ppl.select("c", "a/b")
    assert hash(ppl.select("a/b", "c")) == hash(ppl.select("c", ("a", "b")))
    assert ppl.select("a") != ppl.select("b") and ppl.select("a") != ppl.select_all()
    assert ppl.select(()) == ppl.select_all()


def test_filter_choices():
    assert jax.tree.structure(ppl.filter_choices(CHOICES, ppl.select("ys/outlier", "z"))) == jax.tree.structure(
        {"ys": {"outlier": {"flag": 0}}, "z": 0}
    )
    assert ppl.filter_choices(CHOICES, ppl.select("nope")) == {}
    assert ppl.flatten(ppl.filter_choices(CHOICES, ppl.select_all())).keys() == FLAT.keys()


def test_selection_repr():
    assert repr(ppl.select("ys/y", ("a", "b"))) == "select('a/b', 'ys/y')"
    assert repr(ppl.select_all()) == "select_all()"
    assert repr(ppl.select()) == "select()"


# ----- traces ---------------------------------------------------------------


@ppl.gen
def point(x):
    return ppl.sample("y", dist.Normal(x, 1.0))


@ppl.gen
def model(xs):
    ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([3]))
    ppl.factor("penalty", -1.5)
    return ppl.sample("ys", point.vmap()(xs)), 3


XS = jnp.arange(8.0)


def test_format_trace_lists_every_address():
    trace = model.simulate(jax.random.key(0), (XS,))
    text = ppl.format_trace(trace)
    assert repr(trace) == text
    lines = text.splitlines()
    coeffs = np.array2string(np.asarray(trace.choices["coeffs"]), precision=4)
    assert lines[0] == f"Trace(log_density=float32[] = {np.array2string(np.asarray(trace.log_density), precision=4)})"
    assert lines[1] == f"  coeffs: float32[3] = {coeffs}"  # small arrays show their values
    assert lines[2] == "  penalty: float32[] = -1.5"
    assert lines[3] == "  ys/y: float32[8]"  # large ones only their shape
    assert lines[4] == "  retval: ('float32[8]', 'int32[] = 3')"


def test_format_trace_of_batched_and_traced_traces():
    batched = jax.vmap(lambda k: model.simulate(k, (XS,)))(jax.random.split(jax.random.key(0), 3))
    text = ppl.format_trace(batched)
    assert "coeffs: float32[3, 3]" in text and "ys/y: float32[3, 8]" in text
    assert "Trace(log_density=float32[3] = [" in text
    seen = []
    jax.jit(lambda t: seen.append(ppl.format_trace(t)) or t.log_density)(batched[0])
    assert "coeffs: float32[3] (traced)" in seen[0]


def test_format_trace_of_a_bare_value():
    trace = ppl.as_gen(dist.Normal(0.0, 1.0)).simulate(jax.random.key(0), ())
    assert "  <value>: float32[] = " in ppl.format_trace(trace)


def test_trace_is_a_pytree_with_static_arguments():
    trace = model.simulate(jax.random.key(0), (XS,))
    leaves, treedef = jax.tree.flatten(trace)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert rebuilt.args[0] is not None and np.array_equal(rebuilt.args[0], XS)

    @ppl.gen
    def sized(n, label):
        return ppl.sample("x", dist.Normal(0.0, 1.0).expand([n]))

    trace = sized.simulate(jax.random.key(0), (4, "label"))
    rebuilt = jax.tree.map(lambda x: x, trace)
    assert rebuilt.args == (4, "label")  # Python values are not leaves
    assert len(jax.tree.leaves(trace)) == 3  # choice, retval, log_density


def test_indexing_a_batched_trace():
    batched = jax.vmap(lambda k: model.simulate(k, (XS,)))(jax.random.split(jax.random.key(0), 3))
    second = batched[1]
    single = model.simulate(jax.random.split(jax.random.key(0), 3)[1], (XS,))
    np.testing.assert_allclose(second.choices["coeffs"], single.choices["coeffs"], rtol=1e-6)
    np.testing.assert_allclose(second.log_density, single.log_density, rtol=1e-6)
    assert second.args is batched.args
