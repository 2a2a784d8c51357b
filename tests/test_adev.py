"""ADEV: gradient estimators are unbiased (within K standard errors of exact
gradients) for every strategy and baseline, for choices inside cond and scan
and for vectorised choices; enumeration is exact; and neither vectorised
choices nor scan lengths grow the program."""

import itertools

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


def assert_value_and_grad_unbiased(objective, params, exact_fn, n=N):
    """The estimates of E[fn] and of its gradient, from one compiled run."""
    both = lambda k: jnp.concatenate([jnp.ravel(x) for x in objective.value_and_grad_estimate(k, params)])
    exact = np.concatenate([np.ravel(exact_fn(params)), np.ravel(jax.grad(exact_fn)(params))])
    assert_unbiased(both, exact, n)


@ppl.gen
def normal(mu, sigma):
    return ppl.sample("x", dist.Normal(mu, sigma))


def normal_objective(key, params):  # E[(x - 3)^2] = (mu - 3)^2 + sigma^2
    x = normal.simulate(key, (params[0], params[1])).retval
    return (x - 3.0) ** 2


REINFORCE_BASELINES = [Reinforce(), Reinforce(baseline=None), Reinforce(baseline=2.0), Reinforce(baseline="leave-one-out")]


@pytest.mark.parametrize("strategy", [Reparam(), MeasureValued(), *REINFORCE_BASELINES], ids=repr)
def test_continuous_strategies_are_unbiased(strategy):
    objective = expectation(normal_objective, strategies={"x": strategy})
    exact = lambda params: (params[0] - 3.0) ** 2 + params[1] ** 2
    assert_value_and_grad_unbiased(objective, jnp.array([1.0, 0.7]), exact)


@ppl.gen
def flip_then_noise(logit):  # a discrete choice with randomness after it
    b = ppl.sample("b", dist.Bernoulli(logits=logit))
    return ppl.sample("y", dist.Normal(2.0 * b, 1.0))


def flip_objective(key, logit):  # E[y^2] = p * 5 + (1 - p) * 1
    return flip_then_noise.simulate(key, (logit,)).retval ** 2


def flip_exact_gradient(logit):
    p = jax.nn.sigmoid(logit)
    return p * (1 - p) * (5.0 - 1.0)


@pytest.mark.parametrize("strategy", [Enumerate(), MeasureValued(), Reinforce(), Reinforce(baseline="leave-one-out")], ids=repr)
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
    grad_estimate, estimate = jax.jit(objective.grad_estimate), jax.jit(objective.estimate)
    for seed in range(3):
        assert jnp.allclose(grad_estimate(jax.random.key(seed), logits), exact, atol=1e-6)
        assert jnp.allclose(estimate(jax.random.key(seed), logits), jnp.sum(jax.nn.softmax(logits) * values))


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


@pytest.mark.parametrize("strategy", [Enumerate(), MeasureValued()], ids=repr)
def test_vectorised_bernoulli_choices_are_unbiased(strategy):
    weights = jnp.array([1.0, -2.0, 3.0, 0.5])
    program = lambda key, logits: jnp.sum(weights * many_flips.simulate(key, (logits,)).retval) ** 2
    objective = expectation(program, strategies={dist.BernoulliLogits: strategy})
    logits = jnp.array([0.1, -0.3, 0.7, 0.0])  # 0.0: NumPyro's own log_prob has a wrong gradient there

    def exact_value(l):
        p = jax.nn.sigmoid(l)
        mean = jnp.sum(weights * p)
        variance = jnp.sum(weights**2 * p * (1 - p))
        return mean**2 + variance

    assert_unbiased(lambda k: objective.grad_estimate(k, logits), jax.grad(exact_value)(logits), n=4000)


@pytest.mark.parametrize("strategy", [Enumerate(), MeasureValued()], ids=repr)
def test_n_vectorised_choices_do_not_grow_the_program(strategy):
    program = lambda key, logits: jnp.sum(many_flips.simulate(key, (logits,)).retval * 1.0)
    objective = expectation(program, strategies={dist.BernoulliLogits: strategy})

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


@ppl.gen
def normals(mu, sigma):
    return ppl.sample("x", dist.Normal(mu, sigma))


@ppl.gen
def category(logits):
    return ppl.sample("c", dist.Categorical(logits=logits))


@ppl.gen
def count(rate):
    return ppl.sample("n", dist.Poisson(rate))


VALUES = jnp.array([1.0, -2.0, 0.5])


@ppl.gen
def expanded_normals(mu, sigma):  # one array-valued choice
    return ppl.sample("x", dist.Normal(mu, sigma).expand([3]))


def _normal_case(vectorised):  # E[(w . x)^2] = (w . mu)^2 + sum w^2 sigma^2: the elements interact
    gf = normals.vmap() if vectorised else expanded_normals
    program = lambda key, p: jnp.sum(VALUES * gf.simulate(key, (p[0], p[1])).retval) ** 2
    exact = lambda p: jnp.sum(VALUES * p[0]) ** 2 + jnp.sum(VALUES**2 * p[1] ** 2)
    params = jnp.array([[0.3, -0.5, 1.0], [0.8, 1.2, 0.6]]) if vectorised else jnp.array([0.3, 0.8])
    return program, params, exact


def _categorical_case():  # E[(sum_i v[c_i])^2] from the means and variances of v[c_i]
    program = lambda key, logits: jnp.sum(VALUES[category.vmap().simulate(key, (logits,)).retval]) ** 2

    def exact(logits):
        probs = jax.nn.softmax(logits)
        mean, second = probs @ VALUES, probs @ VALUES**2
        return jnp.sum(mean) ** 2 + jnp.sum(second - mean**2)

    return program, jnp.array([[0.2, -0.4, 1.0], [0.0, 0.5, -1.0]]), exact


def _poisson_case():  # sum_i n_i ~ Poisson(sum_i rate_i)
    program = lambda key, rates: jnp.sqrt(1.0 + jnp.sum(count.vmap().simulate(key, (rates,)).retval))
    support = jnp.arange(60.0)
    exact = lambda rates: jnp.sum(jnp.exp(dist.Poisson(jnp.sum(rates)).log_prob(support)) * jnp.sqrt(1.0 + support))
    return program, jnp.array([0.7, 1.5, 0.4]), exact


@pytest.mark.parametrize(
    "case",
    [lambda: _normal_case(False), lambda: _normal_case(True), _categorical_case, _poisson_case],
    ids=["normal-expanded", "normal-vmapped", "categorical-vmapped", "poisson-vmapped"],
)
def test_measure_valued_derivatives_of_each_element(case):
    program, params, exact = case()
    objective = expectation(program, strategies={"x": MeasureValued(), "c": MeasureValued(), "n": MeasureValued()})
    assert_unbiased(lambda k: objective.grad_estimate(k, params), jax.grad(exact)(params), n=10_000)


def test_sampled_baseline_of_choices_vmapped_over_keys():  # one key per element: E[(sum x_i)^2] = 9 mu^2 + 3
    def program(key, mu):
        xs = jax.vmap(lambda k: normal.simulate(k, (mu, 1.0)).retval)(jax.random.split(key, 3))
        return jnp.sum(xs) ** 2

    objective = expectation(program, strategies={"x": Reinforce()})
    assert_unbiased(lambda k: objective.grad_estimate(k, 0.4), 18 * 0.4)


@ppl.gen
def switched(params):  # y from one of two normals, picked by a coin
    b = ppl.sample("b", dist.Bernoulli(logits=params[0]))
    return ppl.sample("y", ppl.cond(b, dist.Normal(params[1], 1.0), dist.Normal(params[2], 2.0)))


def switched_objective(key, params):  # noise after the cond: E = p (mu1^2 + 1) + (1 - p) (mu2^2 + 4) + 1
    k1, k2 = jax.random.split(key)
    y = switched.simulate(k1, (params,)).retval
    return normal.simulate(k2, (y, 1.0)).retval ** 2


def switched_exact(params):
    p = jax.nn.sigmoid(params[0])
    return p * (params[1] ** 2 + 1.0) + (1 - p) * (params[2] ** 2 + 4.0) + 1.0


@pytest.mark.parametrize("coin, branch", [(Enumerate(), Reparam()), (Reinforce(), MeasureValued())], ids=repr)
def test_choices_inside_cond(coin, branch):
    objective = expectation(switched_objective, strategies={"b": coin, "y": branch})
    assert_value_and_grad_unbiased(objective, jnp.array([0.4, 1.5, -0.5]), switched_exact)


@ppl.gen
def walk_step(previous, scale):
    z = ppl.sample("z", dist.Normal(previous, scale))
    return z, z


def walk_objective(key, params, steps=4):
    zs = walk_step.scan(steps).simulate(key, (params[0], params[1] * jnp.ones(steps))).retval[1]
    return jnp.sum(zs**2)


def walk_exact(params, steps=4):  # z_t = mu + t noises: E[sum_t z_t^2] = n mu^2 + sigma^2 n (n + 1) / 2
    return steps * params[0] ** 2 + params[1] ** 2 * steps * (steps + 1) / 2


def test_gaussian_random_walk_inside_scan():  # reparameterised by default
    objective = expectation(walk_objective)
    assert_value_and_grad_unbiased(objective, jnp.array([0.5, 0.8]), walk_exact)


def test_scan_length_does_not_grow_the_program():
    objective = expectation(walk_objective, strategies={"z": Reinforce()})

    def size(steps):
        jaxpr = jax.make_jaxpr(lambda k: objective.grad_estimate(k, jnp.ones(2), steps))(jax.random.key(0))
        return len(str(jaxpr))

    sizes = [size(n) for n in (2, 8, 32)]
    assert max(sizes) < 1.1 * min(sizes), sizes


@ppl.gen
def flip_step(previous, params):  # a Markov chain of coin flips
    b = ppl.sample("b", dist.Bernoulli(logits=params[0] + params[1] * previous))
    return b, b


CHAIN_WEIGHTS = jnp.array([1.0, -2.0, 1.5])


def chain_objective(key, params):  # noise after the chain: E[y^2] = E[f(bs)^2] + 1
    k1, k2 = jax.random.split(key)
    init, xs = jnp.zeros((), jnp.int32), jnp.broadcast_to(params, (3, 2))
    bs = flip_step.scan(3).simulate(k1, (init, xs)).retval[1]
    return normal.simulate(k2, (jnp.sum(CHAIN_WEIGHTS * bs) - 0.5, 1.0)).retval ** 2


PATHS = jnp.array(list(itertools.product([0.0, 1.0], repeat=3)))  # the 2^3 paths of the chain


def chain_exact(params):  # by enumeration of the paths
    previous = jnp.concatenate([jnp.zeros((len(PATHS), 1)), PATHS[:, :-1]], axis=1)
    p = jax.nn.sigmoid(params[0] + params[1] * previous)
    probability = jnp.prod(jnp.where(PATHS == 1.0, p, 1 - p), axis=1)
    return jnp.sum(probability * ((PATHS @ CHAIN_WEIGHTS - 0.5) ** 2 + 1.0))


@pytest.mark.parametrize("strategy", [None, Reinforce(baseline=2.0)], ids=repr)
def test_bernoulli_chain_inside_scan(strategy):  # None: the default inside scan, a sampled baseline
    objective = expectation(chain_objective, strategies={} if strategy is None else {"b": strategy})
    assert_value_and_grad_unbiased(objective, jnp.array([0.3, -1.2]), chain_exact)


@ppl.gen
def gated_step(total, theta):  # a REINFORCE'd coin whose logit is a reparameterised choice
    x = ppl.sample("x", dist.Normal(theta, 1.0))
    b = ppl.sample("b", dist.Bernoulli(logits=x))
    return total + b * x, None


def test_reinforce_after_reparam_inside_scan():
    objective = expectation(lambda key, theta: gated_step.scan(2).simulate(key, (0.0, jnp.full(2, theta))).retval[0] ** 2)
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)  # E[g(x)], x ~ N(theta, 1), by quadrature

    def exact(theta):
        x = theta + nodes
        mean = lambda g: jnp.sum(weights * g) / np.sqrt(2 * np.pi)
        first, second = mean(x * jax.nn.sigmoid(x)), mean(x**2 * jax.nn.sigmoid(x))
        return 2 * second + 2 * first**2  # (s1 + s2)^2 with s_t = b_t x_t independent

    assert_unbiased(lambda k: objective.grad_estimate(k, 0.3), jax.grad(exact)(0.3))


@ppl.gen
def jump_step(position, logit):  # a coin picks the direction of each jump
    b = ppl.sample("b", dist.Bernoulli(logits=logit))
    z = ppl.sample("z", ppl.cond(b, dist.Normal(position + 1.0, 1.0), dist.Normal(position - 1.0, 0.5)))
    return z, None


def test_cond_inside_scan():  # the default strategies: the coin REINFORCE'd, the jumps reparameterised
    steps = 3
    program = lambda key, logit: jump_step.scan(steps).simulate(key, (0.0, jnp.full(steps, logit))).retval[0] ** 2
    objective = expectation(program)

    def exact(logit):  # the final position is a sum of i.i.d. jumps
        p = jax.nn.sigmoid(logit)
        mean, second = 2 * p - 1, p * 2.0 + (1 - p) * 1.25
        return steps * (second - mean**2) + (steps * mean) ** 2

    assert_unbiased(lambda k: objective.grad_estimate(k, 0.2), jax.grad(exact)(0.2))


@pytest.mark.parametrize("strategy", [Enumerate(), MeasureValued(), Reinforce(baseline="leave-one-out")], ids=repr)
def test_strategies_that_need_the_continuation_are_reported_inside_scan(strategy):
    objective = expectation(chain_objective, strategies={"b": strategy})
    with pytest.raises(ppl.ControlFlowError, match="'b'.*scan"):
        objective.grad_estimate(jax.random.key(0), jnp.zeros(2))


def _poisson_chain(n):
    @ppl.gen
    def chain(rate):
        total = 0.0
        for i in range(n):
            total = total + ppl.sample(f"n{i}", dist.Poisson(rate + 0.1 * total))
        return total

    return chain


def test_sequential_reinforce_choices_do_not_grow_the_program_exponentially():
    # Each sampled baseline reruns the rest of the program; that rerun only
    # draws (its gradient is stopped), so n choices cost O(n^2), not 2^n.
    def size(n):
        chain = _poisson_chain(n)
        objective = expectation(lambda key, rate: 1.0 * chain.simulate(key, (rate,)).retval)
        return len(jax.make_jaxpr(lambda k, r: objective.grad_estimate(k, r))(jax.random.key(0), 1.0).jaxpr.eqns)

    sizes = [size(n) for n in (4, 8, 16)]
    assert sizes[1] / sizes[0] < 5 and sizes[2] / sizes[1] < 5, sizes


def test_default_enumeration_stops_before_the_program_explodes():
    # Exact enumeration of n scalar coins runs what follows 2^n times; past the
    # budget the default for further coins is REINFORCE. Explicit choices stay.
    @ppl.gen
    def coins(p):
        return sum(ppl.sample(f"b{i}", dist.Bernoulli(p)) for i in range(20))

    objective = expectation(lambda key, p: 1.0 * coins.simulate(key, (p,)).retval)
    grads = jax.jit(jax.vmap(lambda k: objective.grad_estimate(k, 0.3)))(jax.random.split(jax.random.key(0), 2000))
    assert abs(float(grads.mean()) - 20.0) < 4.5 * float(grads.std()) / np.sqrt(grads.size)  # d/dp E[sum] = 20
    jaxpr = jax.make_jaxpr(lambda k: objective.grad_estimate(k, 0.3))(jax.random.key(0)).jaxpr
    budget = ppl.transforms.adev._Surrogate.ENUMERATION_BUDGET
    assert _largest_value(jaxpr) <= 16 * budget  # 2^20 runs of the tail would show as ~1e6-element values


def _largest_value(jaxpr):
    sizes = [int(np.prod(v.aval.shape)) for e in jaxpr.eqns for v in e.outvars if hasattr(v.aval, "shape")]
    for e in jaxpr.eqns:
        for param in e.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    sizes.append(_largest_value(getattr(inner, "jaxpr", inner)))
    return max(sizes, default=0)
