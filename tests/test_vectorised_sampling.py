"""Choices inside ppl's Vmap are drawn jointly from one key: they must still be
independent draws from the right distribution, and a user's own jax.vmap
keeps JAX's semantics (vmap(f)(xs)[i] == f(xs[i]))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist

K = 5.0  # standard errors


def check_standard_normal(x, axis=0):
    """Mean 0 and variance 1 per column, within K standard errors."""
    n = x.shape[axis]
    assert np.all(np.abs(np.mean(x, axis)) < K / np.sqrt(n))
    assert np.all(np.abs(np.var(x, axis) - 1.0) < K * np.sqrt(2.0 / n))


def check_uncorrelated(a, b):
    n = a.shape[0]
    assert abs(np.corrcoef(a, b)[0, 1]) < K / np.sqrt(n)


@ppl.gen
def scalar(loc):
    return ppl.sample("x", dist.Normal(loc, 1.0))


@ppl.gen
def expanded(loc):
    return ppl.sample("x", dist.Normal(loc, 1.0).expand([2]))


@ppl.gen
def row(loc):  # a per-element (3,) batch with a scalar scale: parameters must stay aligned
    return ppl.sample("x", dist.Normal(loc, 1.0))


@pytest.mark.parametrize("model", [scalar, expanded], ids=["batched-draw", "split-keys"])
def test_vmapped_choices_are_independent_and_correctly_distributed(model):
    n = 20_000
    x = np.asarray(model.vmap().simulate(jax.random.key(0), (jnp.zeros(n),)).choices["x"]).reshape(n, -1)
    check_standard_normal(x)
    check_uncorrelated(x[:-1, 0], x[1:, 0])  # neighbouring elements
    if x.shape[1] > 1:
        check_uncorrelated(x[:, 0], x[:, 1])


def test_per_element_parameters_stay_aligned():
    n = 10_000
    locs = jnp.broadcast_to(jnp.array([-3.0, 0.0, 5.0]), (n, 3))
    x = np.asarray(row.vmap().simulate(jax.random.key(1), (locs,)).choices["x"])
    assert x.shape == (n, 3)
    check_standard_normal(x - np.asarray(locs))
    check_uncorrelated(x[:, 0], x[:, 2])


def test_nested_vmaps_and_repeat_draw_independently():
    n, m = 200, 100
    x = np.asarray(scalar.vmap().repeat(n).simulate(jax.random.key(2), (jnp.zeros(m),)).choices["x"])
    assert x.shape == (n, m)
    check_standard_normal(x.reshape(-1))
    check_uncorrelated(x[:-1].reshape(-1), x[1:].reshape(-1))  # across the outer axis
    check_uncorrelated(x[:, :-1].reshape(-1), x[:, 1:].reshape(-1))  # across the inner axis


def test_discrete_choices_in_vmap():
    n = 20_000
    @ppl.gen
    def flip(p):
        return ppl.sample("b", dist.Bernoulli(p))

    b = np.asarray(flip.vmap().simulate(jax.random.key(3), (jnp.full(n, 0.3),)).choices["b"])
    assert abs(b.mean() - 0.3) < K * np.sqrt(0.3 * 0.7 / n)
    check_uncorrelated(b[:-1].astype(float), b[1:].astype(float))


def test_user_vmap_keeps_jax_semantics():
    key = jax.random.key(4)
    locs = jnp.arange(5.0)
    batched = jax.vmap(lambda loc: scalar.simulate(key, (loc,)).choices["x"])(locs)
    one_by_one = jnp.stack([scalar.simulate(key, (loc,)).choices["x"] for loc in locs])
    assert jnp.allclose(batched, one_by_one)
    # the same key, so the same noise: values differ exactly by the locations
    assert jnp.allclose(batched - locs, batched[0] - locs[0])


def test_user_vmap_over_keys_of_a_vmapped_model():
    keys = jax.random.split(jax.random.key(5), 4)
    batched = jax.vmap(lambda k: scalar.vmap().simulate(k, (jnp.zeros(3),)).choices["x"])(keys)
    one_by_one = jnp.stack([scalar.vmap().simulate(k, (jnp.zeros(3),)).choices["x"] for k in keys])
    assert jnp.allclose(batched, one_by_one)


@ppl.gen
def shifted_up(mu):
    return ppl.sample("y", dist.Normal(mu, 1.0))


@ppl.gen
def shifted_down(mu):
    return ppl.sample("y", dist.Normal(-mu, 1.0))


@ppl.gen
def branching(mu):
    return ppl.sample("c", ppl.cond(mu > 0, shifted_up, shifted_down, mu))


def test_a_cond_with_a_batched_predicate_draws_independent_elements():
    # Regression: JAX's batching of lax.switch broadcasts the elements' shared key,
    # which made every element draw the same value.
    mus = jnp.tile(jnp.array([3.0, -3.0]), 2000)
    y = np.asarray(branching.vmap().simulate(jax.random.key(0), (mus,)).choices["c"]["y"])
    centred = y - 3.0  # both branches have mean 3 here
    check_standard_normal(centred)
    check_uncorrelated(centred[0::2], centred[1::2])
