"""ADEV: gradient estimators are unbiased (within K standard errors of exact
gradients), enumeration is exact, and enumerating vectorised choices does not
grow the program exponentially."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl.transforms import Enumerate, MeasureValued, Reinforce, Reparam, expectation

K = 4.5
N = 20_000


def mean_and_se(fn, n=N, seed=0):
    values = np.asarray(jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n)))
    return values.mean(0), values.std(0) / np.sqrt(n)


def assert_unbiased(fn, exact, n=N):
    mean, se = mean_and_se(fn, n)
    assert np.all(np.abs(mean - exact) < K * se + 1e-6), (mean, se, exact)


@ppl.gen
def normal(mu, sigma):
    return ppl.sample("x", dist.Normal(mu, sigma))


def normal_objective(key, params):  # E[(x - 3)^2] = (mu - 3)^2 + sigma^2
    x = normal.simulate(key, (params[0], params[1])).retval
    return (x - 3.0) ** 2


@pytest.mark.parametrize("strategy", [Reparam(), Reinforce(), Reinforce(baseline=None), MeasureValued()], ids=repr)
def test_continuous_strategies_are_unbiased(strategy):
    objective = expectation(normal_objective, strategies={"x": strategy})
    params = jnp.array([1.0, 0.7])
    exact = np.array([2 * (1.0 - 3.0), 2 * 0.7])
    assert_unbiased(lambda k: objective.grad_estimate(k, params), exact)
    value, _ = mean_and_se(lambda k: objective.estimate(k, params))
    assert abs(value - ((1.0 - 3.0) ** 2 + 0.49)) < 0.1


@ppl.gen
def flip_then_noise(logit):  # a discrete choice with randomness after it
    b = ppl.sample("b", dist.Bernoulli(logits=logit))
    return ppl.sample("y", dist.Normal(2.0 * b, 1.0))


def flip_objective(key, logit):  # E[y^2] = p * 5 + (1 - p) * 1
    return flip_then_noise.simulate(key, (logit,)).retval ** 2


def flip_exact_gradient(logit):
    p = jax.nn.sigmoid(logit)
    return p * (1 - p) * (5.0 - 1.0)


@pytest.mark.parametrize("strategy", [Enumerate(), Reinforce(), MeasureValued()], ids=repr)
def test_discrete_choice_with_randomness_after(strategy):
    objective = expectation(flip_objective, strategies={"b": strategy})
    assert_unbiased(lambda k: objective.grad_estimate(k, 0.3), flip_exact_gradient(0.3))


def test_enumeration_is_exact_without_randomness_after():
    @ppl.gen
    def categorical(logits):
        return ppl.sample("c", dist.Categorical(logits=logits))

    values = jnp.array([1.0, -2.0, 0.5])
    objective = expectation(lambda key, logits: values[categorical.simulate(key, (logits,)).retval])
    logits = jnp.array([0.2, -0.4, 1.0])
    exact = jax.grad(lambda l: jnp.sum(jax.nn.softmax(l) * values))(logits)
    for seed in range(3):
        assert jnp.allclose(objective.grad_estimate(jax.random.key(seed), logits), exact, atol=1e-6)
        assert jnp.allclose(objective.estimate(jax.random.key(seed), logits), jnp.sum(jax.nn.softmax(logits) * values))


@pytest.mark.parametrize("strategy", [MeasureValued(), Reinforce()], ids=repr)
def test_poisson_and_categorical_measure_valued(strategy):
    @ppl.gen
    def counts(rate):
        return ppl.sample("n", dist.Poisson(rate))

    objective = expectation(lambda key, rate: jnp.sqrt(1.0 + counts.simulate(key, (rate,)).retval), strategies={"n": strategy})
    support = jnp.arange(60.0)
    exact = jax.grad(lambda r: jnp.sum(jnp.exp(dist.Poisson(r).log_prob(support)) * jnp.sqrt(1.0 + support)))(2.5)
    assert_unbiased(lambda k: objective.grad_estimate(k, 2.5), exact)


@ppl.gen
def flips(logits):
    return ppl.sample("bs", dist.Bernoulli(logits=logits))


@ppl.gen
def many_flips(logits):
    return ppl.sample("f", flips.vmap()(logits))


def test_enumerating_vectorised_choices_is_unbiased():
    weights = jnp.array([1.0, -2.0, 3.0, 0.5])
    objective = expectation(lambda key, logits: jnp.sum(weights * many_flips.simulate(key, (logits,)).retval) ** 2)
    logits = jnp.array([0.1, -0.3, 0.7, 0.0])  # 0.0: NumPyro's own log_prob has a wrong gradient there

    def exact_value(l):
        p = jax.nn.sigmoid(l)
        mean = jnp.sum(weights * p)
        variance = jnp.sum(weights**2 * p * (1 - p))
        return mean**2 + variance

    assert_unbiased(lambda k: objective.grad_estimate(k, logits), jax.grad(exact_value)(logits), n=4000)


def test_enumerating_n_vectorised_choices_does_not_grow_the_program():
    objective = expectation(lambda key, logits: jnp.sum(many_flips.simulate(key, (logits,)).retval * 1.0))

    def size(n):
        jaxpr = jax.make_jaxpr(lambda k: objective.grad_estimate(k, jnp.zeros(n)))(jax.random.key(0))
        return len(str(jaxpr))

    sizes = [size(n) for n in (2, 8, 32)]
    assert max(sizes) < 1.1 * min(sizes), sizes  # the same program for every n: vmap, not unrolling


def test_nested_expectation():
    # outer: x ~ N(mu, 1); inner: E_z[(x + z)^2] with z ~ N(0, 1) = x^2 + 1; so E = mu^2 + 2
    inner = expectation(lambda key, x: (x + normal.simulate(key, (0.0, 1.0)).retval) ** 2)

    def outer_program(key, mu):
        k1, k2 = jax.random.split(key)
        x = normal.simulate(k1, (mu, 1.0)).retval
        return inner.estimate(k2, x)

    outer = expectation(outer_program)
    assert_unbiased(lambda k: outer.grad_estimate(k, 0.8), 2 * 0.8)


def test_strategy_by_distribution_type_and_default_choice():
    objective = expectation(flip_objective, strategies={dist.BernoulliLogits: Reinforce()})
    assert_unbiased(lambda k: objective.grad_estimate(k, -0.2), flip_exact_gradient(-0.2))
    default = expectation(flip_objective)  # Bernoulli: enumeration by default, Normal: reparameterised
    assert_unbiased(lambda k: default.grad_estimate(k, -0.2), flip_exact_gradient(-0.2))


def test_gamma_implicit_reparameterisation():
    @ppl.gen
    def gamma(concentration):
        return ppl.sample("g", dist.Gamma(concentration, 1.0))

    objective = expectation(lambda key, c: gamma.simulate(key, (c,)).retval ** 2)  # E = c (c + 1)
    assert_unbiased(lambda k: objective.grad_estimate(k, 1.5), 2 * 1.5 + 1.0)


def test_choice_inside_scan_is_reported():
    step = ppl.gen(lambda carry, _: (ppl.sample("z", dist.Normal(carry, 1.0)), None))
    objective = expectation(lambda key, mu: step.scan(3).simulate(key, (mu, None)).retval[0])
    with pytest.raises(ppl.ControlFlowError, match="scan"):
        objective.grad_estimate(jax.random.key(0), 0.0)


@pytest.mark.parametrize(
    "make, count",
    [(lambda l: dist.Bernoulli(logits=l), 1), (lambda l: dist.Binomial(3, logits=l), 3)],
    ids=["bernoulli", "binomial"],
)
def test_logit_densities_have_the_right_gradient_at_zero(make, count):
    @ppl.gen
    def model(logit):
        return ppl.sample("b", make(logit))

    value = model.simulate(jax.random.key(0), (0.0,)).choices["b"]
    gradient = jax.grad(lambda l: model.assess({"b": value}, (l,))[0])(0.0)
    assert jnp.allclose(gradient, value - count * 0.5)  # d/dl log p = k - n sigmoid(l)
