"""``vi.fit``: compiled once (a counter in the model body counts traces),
resumable to the same result, a history of objective values, unbiased
minibatch gradients (exact over all minibatches at a fixed guide draw, and
within K standard errors of closed-form ELBO gradients through fit itself),
clear errors and a progress bar."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ppl
from ppl import dist
from ppl.inference import vi
from ppl.inference.vi.fit import _minibatch

K = 4.5
TRACES = collections.Counter()
DATA = jnp.array([0.3, 1.9, 1.2, 2.5, 0.8, -0.4])
ARGS = ({"x": DATA}, DATA)
PRIOR_MEAN, PRIOR_SCALE, NOISE = 1.0, 2.0, 0.7


def make_conjugate():
    """A fresh model (its own compile caches) and its mean-field guide:
    z ~ N(1, 2), x_i ~ N(z, 0.7)."""

    @ppl.gen
    def model(params, xs):
        TRACES["model"] += 1
        z = ppl.sample("z", dist.Normal(PRIOR_MEAN, PRIOR_SCALE))
        ppl.sample("x", dist.Normal(z, NOISE).expand([xs.shape[0]]).to_event(1))

    return model, vi.mean_field(model, (None, DATA), {"x": DATA})


def traced_during(fn):
    before = sum(TRACES.values())
    fn()
    return sum(TRACES.values()) - before


def run(objective, params, optimizer, num_steps, args=ARGS, **options):
    return vi.fit(objective, params, optimizer, num_steps, args, progress=False, **options)


# ----- compiled once, resumable, with a history ---------------------------------------


@pytest.mark.parametrize("batch_size", [None, 2])
def test_fit_compiles_once(batch_size):
    model, guide = make_conjugate()
    objective, optimizer = vi.elbo(model, guide), optax.adam(0.05)
    results = []
    fit = lambda *a, **o: results.append(run(objective, *a, batch_size=batch_size, **o))
    assert traced_during(lambda: fit(guide.init_params(), optimizer, 150, key=jax.random.key(0))) > 0
    assert traced_during(lambda: fit(None, optimizer, 37, state=results[-1].state)) == 0  # resumed, fewer steps
    assert traced_during(lambda: fit(None, optimizer, 420, state=results[-1].state)) == 0  # more steps
    new_data = ({"x": DATA + 1.0}, DATA + 1.0)  # new values, same shapes
    assert traced_during(lambda: fit(guide.init_params(jax.random.key(1)), optimizer, 5, new_data, key=jax.random.key(2))) == 0
    assert [len(r.history) for r in results] == [150, 37, 420, 5]


@pytest.mark.parametrize("batch_size", [None, 3])
def test_resuming_gives_the_uninterrupted_run(batch_size):
    model, guide = make_conjugate()
    objective, optimizer = vi.elbo(model, guide), optax.adam(0.05)
    options = dict(batch_size=batch_size)
    whole = run(objective, guide.init_params(), optimizer, 220, key=jax.random.key(0), **options)
    first = run(objective, guide.init_params(), optimizer, 150, key=jax.random.key(0), **options)
    second = run(objective, None, optimizer, 70, state=first.state, **options)
    assert (len(first.history), len(second.history)) == (150, 70)
    assert int(second.state.step) == int(whole.state.step) == 220
    np.testing.assert_allclose(np.concatenate([first.history, second.history]), whole.history, rtol=1e-6)
    for resumed, uninterrupted in zip(jax.tree.leaves(second.params), jax.tree.leaves(whole.params)):
        np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-6, atol=1e-7)


def test_history_is_finite_and_improves():
    """From the exact ELBO at the initial parameters up to (not above) the log
    evidence, which the ELBO bounds."""
    model, guide = make_conjugate()
    initial = guide.init_params()
    result = run(vi.elbo(model, guide), initial, optax.adam(0.05), 300, key=jax.random.key(0))
    history = result.history
    assert history.shape == (300,) and np.all(np.isfinite(history))
    late = history[-100:]
    se = late.std() / np.sqrt(len(late))
    evidence = dist.MultivariateNormal(
        jnp.full(len(DATA), PRIOR_MEAN), NOISE**2 * jnp.eye(len(DATA)) + PRIOR_SCALE**2
    ).log_prob(DATA)
    assert conjugate_elbo(initial) + K * se < late.mean() < evidence + K * se, (conjugate_elbo(initial), late.mean(), evidence)


def test_fit_maximises_any_expectation():
    """Not only vi objectives: E[-(x - 3)^2] for x ~ N(m, 1). With SGD the
    iterates are linear in the Gaussian noise, m' = m - 2 lr (m + eps - 3),
    so the final m is exactly normal with a mean and variance computed here."""

    @ppl.gen
    def normal(m):
        return ppl.sample("x", dist.Normal(m, 1.0))

    objective = ppl.transforms.expectation(lambda key, params: -((normal.simulate(key, (params["m"],)).retval - 3.0) ** 2))
    schedule, steps = optax.exponential_decay(0.1, 1000, 1e-2), 1000
    result = run(objective, {"m": jnp.zeros(())}, optax.sgd(schedule), steps, (), key=jax.random.key(0))
    mean, variance = 0.0, 0.0
    for step in range(steps):
        rate = float(schedule(step))
        mean, variance = mean - 2 * rate * (mean - 3.0), (1 - 2 * rate) ** 2 * variance + 4 * rate**2
    assert abs(mean - 3.0) < 1e-3 and np.sqrt(variance) < 0.05  # the test can tell m = 3 from m = 3.25
    assert abs(float(result.params["m"]) - mean) < K * np.sqrt(variance)


# ----- minibatches: unbiased rescaling ---------------------------------------------------


def test_rescaled_gradient_averages_to_the_full_gradient_over_all_minibatches():
    """At one guide draw (same key), the rescaled estimate averaged over all
    minibatches of size 2 is the full-data estimate, exactly: each datum is in
    2/6 of them and counts 6/2 times."""
    model, guide = make_conjugate()
    objective = vi.elbo(model, guide)
    params = {"guide": {"loc": jnp.array([0.4]), "raw_scale": jnp.array([-0.5])}}
    key = jax.random.key(3)
    subsets = jnp.array(list(itertools.combinations(range(len(DATA)), 2)))
    scaled = objective.with_data_scale(len(DATA) / 2)
    per_subset = jax.jit(jax.vmap(lambda i: scaled.value_and_grad_estimate(key, params, {"x": DATA[i]}, DATA[i])))
    values, grads = per_subset(subsets)
    full_value, full_grads = objective.value_and_grad_estimate(key, params, *ARGS)
    np.testing.assert_allclose(values.mean(), full_value, rtol=1e-5)
    for average, full in zip(jax.tree.leaves(jax.tree.map(lambda g: g.mean(0), grads)), jax.tree.leaves(full_grads)):
        np.testing.assert_allclose(average, full, rtol=1e-5, atol=1e-5)
    assert not np.allclose(values, full_value)  # each minibatch alone differs


def test_minibatches_are_drawn_without_replacement_and_uniformly():
    rows = jnp.arange(10.0)
    args = ({"x": rows}, rows[:, None] * jnp.ones(3), jnp.ones(4))
    axes = (0, 0, None)
    draw = jax.jit(jax.vmap(lambda k: _minibatch(k, args, axes, 4)))
    observations, matrix, untouched = draw(jax.random.split(jax.random.key(0), 4000))
    index = np.asarray(observations["x"]).astype(int)
    assert all(len(set(row)) == 4 for row in index)  # without replacement
    assert np.all(matrix == observations["x"][..., None]) and untouched.shape == (4000, 4)
    counts = np.stack([(index == i).any(1) for i in range(10)], 1)  # is datum i in the batch?
    frequency, se = counts.mean(0), counts.std(0) / np.sqrt(len(index))
    assert np.all(np.abs(frequency - 0.4) < K * se), frequency


def gradient_recorder():
    """An optax "optimiser" that leaves the parameters where they are and sums
    the gradients it sees (and their squares), to average them over steps."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return zeros, zeros, jnp.zeros(())

    def update(updates, state, params=None):
        total, squares, count = state
        grads = jax.tree.map(jnp.negative, updates)  # fit descends on the negated objective
        state = (jax.tree.map(jnp.add, total, grads), jax.tree.map(lambda s, g: s + g**2, squares, grads), count + 1)
        return jax.tree.map(jnp.zeros_like, updates), state

    return optax.GradientTransformation(init, update)


def expected_log_normal(mean, sd, loc, scale):
    """E[log N(v; loc, scale)] for v ~ N(mean, sd) (loc a number)."""
    return -0.5 * jnp.log(2 * jnp.pi * scale**2) - ((mean - loc) ** 2 + sd**2) / (2 * scale**2)


def entropy(sd):
    return 0.5 * jnp.log(2 * jnp.pi * jnp.e * sd**2)


def conjugate_elbo(params):
    """The mean-field guide's exact ELBO for the conjugate model."""
    m, s = params["guide"]["loc"][0], jax.nn.softplus(params["guide"]["raw_scale"][0])
    data = jnp.sum(expected_log_normal(m, s, DATA, NOISE))
    return expected_log_normal(m, s, PRIOR_MEAN, PRIOR_SCALE) + data + entropy(s)


def global_case():
    """z ~ N(1, 2), x_i ~ N(z, 0.7); mean-field guide."""
    model, guide = make_conjugate()
    params = {"guide": {"loc": jnp.array([0.4]), "raw_scale": jnp.array([-0.5])}}
    return vi.elbo(model, guide), params, ARGS, 0, conjugate_elbo


@ppl.gen
def local_model(params, xs, index):
    mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    z = ppl.sample("z", dist.Normal(mu, 1.0).expand([xs.shape[0]]).to_event(1))
    ppl.sample("x", dist.Normal(z, 0.5).to_event(1))


@ppl.gen
def local_guide(params, xs, index):
    ppl.sample("mu", dist.Normal(params["mu_loc"], jax.nn.softplus(params["mu_raw"])))
    ppl.sample("z", dist.Normal(params["z_loc"][index], jax.nn.softplus(params["z_raw"][index])).to_event(1))


def local_case():
    """A global mu and per-datum z_i ~ N(mu, 1), x_i ~ N(z_i, 0.5); the guide
    of z reads its parameters at the minibatch's indices."""

    def exact(params):
        m, s = params["mu_loc"], jax.nn.softplus(params["mu_raw"])
        a, t = params["z_loc"], jax.nn.softplus(params["z_raw"])
        z_given_mu = -0.5 * jnp.log(2 * jnp.pi) - ((a - m) ** 2 + t**2 + s**2) / 2
        x_given_z = expected_log_normal(a, t, DATA, 0.5)
        return expected_log_normal(m, s, 0.0, 1.0) + entropy(s) + jnp.sum(z_given_mu + x_given_z + entropy(t))

    n = len(DATA)
    params = {"mu_loc": jnp.array(0.3), "mu_raw": jnp.array(-0.2), "z_loc": jnp.linspace(-1.0, 1.0, n), "z_raw": jnp.full(n, -0.7)}
    args = ({"x": DATA}, DATA, jnp.arange(n))
    return vi.elbo(local_model, local_guide, local=("z",)), params, args, 0, exact


@ppl.gen
def datum_model(params, x):
    z = ppl.sample("z", dist.Normal(params["mu"], 1.0))
    ppl.sample("x", dist.Normal(z, 0.5))


@ppl.gen
def datum_guide(params, x):
    ppl.sample("z", dist.Normal(params["w"] * x + params["b"], jax.nn.softplus(params["raw"])))


def per_datum_case():
    """Per datum: z ~ N(mu, 1), x ~ N(z, 0.5), mu a parameter; an amortised
    guide z ~ N(w x + b, softplus(raw))."""

    def exact(params):
        a, t = params["w"] * DATA + params["b"], jax.nn.softplus(params["raw"])
        per_datum = expected_log_normal(a, t, params["mu"], 1.0) + expected_log_normal(a, t, DATA, 0.5) + entropy(t)
        return jnp.sum(per_datum)

    params = {"mu": jnp.array(0.3), "w": jnp.array(0.5), "b": jnp.array(-0.2), "raw": jnp.array(0.1)}
    return vi.per_datum(vi.elbo(datum_model, datum_guide), in_axes=(0, 0)), params, ARGS, (0, 0), exact


@pytest.mark.parametrize("case", [global_case, local_case, per_datum_case], ids=lambda c: c.__name__)
def test_fit_minibatch_gradients_are_unbiased(case):
    """Through fit's own minibatch draw: the gradients fit hands the optimiser
    average (over steps) to the closed-form full-data ELBO gradient, and the
    history to the full-data ELBO."""
    objective, params, args, in_axes, exact = case()
    steps = 4000
    result = run(objective, params, gradient_recorder(), steps, args, key=jax.random.key(0), batch_size=2, in_axes=in_axes)
    total, squares, count = result.state.optimizer_state
    assert int(count) == steps
    exact_grads = jax.grad(exact)(params)
    for path, mean in jax.tree_util.tree_leaves_with_path(jax.tree.map(lambda t: t / steps, total)):
        square = np.asarray(_at(squares, path)) / steps
        se = np.sqrt((square - np.asarray(mean) ** 2) / steps)
        error = np.abs(np.asarray(mean) - np.asarray(_at(exact_grads, path)))
        assert np.all(error < K * se), (path, mean, _at(exact_grads, path), se)
    history = result.history
    assert abs(history.mean() - exact(params)) < K * history.std() / np.sqrt(steps)


def _at(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return tree


# ----- errors and the progress bar -----------------------------------------------------


def test_errors():
    model, guide = make_conjugate()
    objective, params, optimizer = vi.elbo(model, guide), guide.init_params(), optax.sgd(0.01)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size must be in 1..6"):
        run(objective, params, optimizer, 5, key=key, batch_size=7)
    with pytest.raises(ValueError, match="batch_size must be in 1..6"):
        run(objective, params, optimizer, 5, key=key, batch_size=0)
    with pytest.raises(ValueError, match="share one size.*\\[5, 6\\]"):
        run(objective, params, optimizer, 5, ({"x": DATA}, DATA[:5]), key=key, batch_size=2)
    with pytest.raises(TypeError, match="key="):
        run(objective, params, optimizer, 5)
    plain = ppl.transforms.expectation(lambda key, params, observations, xs: objective.estimate(key, params, observations, xs))
    with pytest.raises(TypeError, match="with_data_scale"):
        run(plain, params, optimizer, 5, key=key, batch_size=2)


def test_progress_bar(capsys):
    model, guide = make_conjugate()
    objective, optimizer = vi.elbo(model, guide), optax.adam(0.05)
    vi.fit(objective, guide.init_params(), optimizer, 120, ARGS, key=jax.random.key(0), progress=True)
    err = capsys.readouterr().err
    assert "fit" in err and "120/120" in err and "objective=" in err, err
    vi.fit(objective, guide.init_params(), optimizer, 120, ARGS, key=jax.random.key(0), progress=False)
    err = capsys.readouterr().err
    assert "120/120" not in err and "%|" not in err, err


def test_a_diverging_learning_rate_stops_at_the_first_non_finite_step():
    model, guide = make_conjugate()
    objective, params = vi.elbo(model, guide), guide.init_params()
    with pytest.raises(vi.FitDivergedError, match=r"step \d+ gave a non-finite") as caught:
        run(objective, params, optax.sgd(1e4), 300, key=jax.random.key(0), steps_per_call=50)
    error = caught.value
    assert 0 < error.step < 300 and len(error.history) == error.step and np.all(np.isfinite(error.history))
    assert int(error.state.step) == error.step
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(error.state.params))
    # The kept state is the one an uninterrupted run of that many steps ends in.
    before = run(objective, params, optax.sgd(1e4), error.step, key=jax.random.key(0), steps_per_call=50)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), before.params, error.state.params))


def test_adam_with_a_huge_learning_rate_is_stopped_not_run_to_nan():
    model, guide = make_conjugate()
    try:
        result = run(vi.elbo(model, guide), guide.init_params(), optax.adam(100.0), 300, key=jax.random.key(1))
    except vi.FitDivergedError as error:
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(error.state.params))
    else:  # it may survive; then nothing it returns is NaN
        assert np.all(np.isfinite(result.history))
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.params))


def test_a_model_without_the_params_argument_gets_the_convention_explained():
    @ppl.gen
    def noparams(xs):
        z = ppl.sample("z", dist.Normal(0.0, 1.0))
        ppl.sample("x", dist.Normal(z, 1.0).expand([xs.shape[0]]).to_event(1))

    _, guide = make_conjugate()
    objective = vi.elbo(noparams, guide)
    with pytest.raises(TypeError, match=r"noparams\) takes \(xs\).*called with \(params, \*args\)"):
        objective.estimate(jax.random.key(0), guide.init_params(), {"x": DATA}, DATA)


def test_a_misspelt_observation_is_named_with_a_suggestion():
    model, guide = make_conjugate()
    objective = vi.elbo(model, guide)
    with pytest.raises(ppl.AddressError, match=r"'xx' \(did you mean 'x'\?\)"):
        objective.estimate(jax.random.key(0), guide.init_params(), {"xx": DATA}, DATA)
