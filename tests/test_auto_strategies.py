"""strategies="auto": a pilot run picks, per address, the applicable
gradient strategy with the least variance x time. It picks enumeration for
a small categorical choice and reparameterisation for a vector of Normals
(where a measure-valued derivative runs one continuation per element, and
REINFORCE's variance is larger); the chosen estimator is unbiased; vi.fit
runs the pilot itself and reports the choice."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl
from ppl import dist
from ppl.inference import vi
from ppl.transforms import Enumerate, Reparam, choose_strategies, expectation

K = 4.5


@ppl.gen
def mixture(params):
    c = ppl.sample("c", dist.Categorical(logits=params["logits"]))
    return ppl.sample("x", dist.Normal(params["mu"][c], 1.0).expand([16]))


def program(key, params):  # E = sum_c p_c * 16 * ((mu_c - 1)^2 + 1) / 16
    return jnp.mean((mixture.simulate(key, (params,)).retval - 1.0) ** 2)


def exact(params):
    p = jax.nn.softmax(params["logits"])
    return jnp.sum(p * ((params["mu"] - 1.0) ** 2 + 1.0))


PARAMS = {"logits": jnp.array([0.2, -0.3, 0.5]), "mu": jnp.array([-1.0, 0.5, 2.0])}


def test_picks_enumeration_and_reparameterisation_and_stays_unbiased():
    objective = expectation(program, strategies="auto")
    with pytest.raises(ValueError, match="choose_strategies"):
        objective.grad_estimate(jax.random.key(0), PARAMS)
    choice = choose_strategies(objective, jax.random.key(0), PARAMS)
    assert {a: type(s) for a, s in choice.strategies.items()} == {("c",): Enumerate, ("x",): Reparam}, choice
    assert "<- chosen" in repr(choice) and len(choice.rows) >= 5
    chosen = objective.with_strategies(choice.strategies)
    estimates = jax.jit(jax.vmap(lambda k: jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(chosen.grad_estimate(k, PARAMS))])))
    values = np.asarray(estimates(jax.random.split(jax.random.key(1), 20_000)), float)
    truth = np.concatenate([np.ravel(g) for g in jax.tree.leaves(jax.grad(exact)(PARAMS))])
    se = values.std(0) / np.sqrt(values.shape[0])
    assert np.all(np.abs(values.mean(0) - truth) < K * se + 1e-6), ((values.mean(0) - truth) / se)


def test_fit_runs_the_pilot_and_reports_it():
    @ppl.gen
    def model(params):
        z = ppl.sample("z", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(z, 1.0))

    guide = vi.mean_field(model, (None,), {"x": 2.0})
    result = vi.fit(vi.elbo(model, guide, strategies="auto"), guide.init_params(), optax.adam(0.05), 300,
                    ({"x": 2.0},), key=jax.random.key(0), progress=False)
    assert [type(s) for s in result.strategies.strategies.values()] == [Reparam]  # the guide's one choice
    assert abs(float(result.params["guide"]["loc"][0]) - 1.0) < 0.2  # the posterior mean is 1
