"""The VI objectives library against exact answers.

Every objective is an ``Expectation``; its estimates must be unbiased for
the value and the gradient of that expectation. References:

- a conjugate Gaussian model (z ~ N(0, 1), x ~ N(z, 1); guide N(loc, scale)):
  the ELBO and its gradient in closed form, log p(x) = log N(x; 0, 2);
- a discrete model with an asymmetric likelihood, whose guide has two
  dependent latents (six joint values): each objective's expectation over K
  particles is a finite sum over the 6^K particle tuples, written directly
  with jax.nn (no ppl machinery) and differentiated with ``jax.grad``;
- a discrete hierarchical guide (auxiliary u, latent z, reverse model
  r(u | z)) for the HVI family, enumerated the same way.

Monte Carlo assertions: |mean - exact| < K_SE * SE, SE = std / sqrt(N), seeds
fixed (plus ATOL for float32 round-off in components an estimator computes
exactly, where SE is 0).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.distributions import Distribution

import ppl
from ppl import dist
from ppl.inference import vi
from ppl.transforms import Reinforce

K_SE = 4.5
N = 40_000
ATOL = 1e-5
sg = jax.lax.stop_gradient


def lme(log_values):
    """logmeanexp over the last axis (the reference's own, not vi.logmeanexp)."""
    return jax.nn.logsumexp(log_values, axis=-1) - jnp.log(log_values.shape[-1])


def monte_carlo(fn, n=N, seed=0):
    """``fn`` under jit(vmap) over ``n`` keys; leaves as float64 arrays."""
    out = jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n))
    return jax.tree.map(lambda x: np.asarray(x, np.float64), out)


def assert_mc_close(samples, exact, name=""):
    """Each leaf's mean within K_SE standard errors of the exact leaf."""
    for path, s in jax.tree_util.tree_leaves_with_path(samples):
        e = np.asarray(_at(exact, path), np.float64)
        mean, se = s.mean(0), s.std(0) / np.sqrt(len(s))
        bad = np.abs(mean - e) > K_SE * se + ATOL
        assert not np.any(bad), f"{name}{jax.tree_util.keystr(path)}: mean {mean}, exact {e}, SE {se}"


def _at(tree, path):
    for entry in path:
        tree = tree[entry.key] if hasattr(entry, "key") else tree[entry.idx]
    return tree


def assert_objective_unbiased(objective, exact_fn, params, observations, *args, n=N, seed=0):
    """Value and gradient estimates of ``objective`` vs the exact expectation
    ``exact_fn(params)`` and its gradient."""
    value, grads = monte_carlo(lambda k: objective.value_and_grad_estimate(k, params, observations, *args), n, seed)
    exact_value, exact_grads = jax.jit(jax.value_and_grad(exact_fn))(params)
    assert_mc_close(value, exact_value, f"{objective!r} value")
    assert_mc_close(grads, exact_grads, f"{objective!r} grad")


# ----- conjugate Gaussian: z ~ N(0, 1), x ~ N(z, 1); guide N(loc, exp(log_scale)) -----

X_OBS = 2.0  # posterior N(1, 1/2), log p(x) = log N(2; 0, 2)


@ppl.gen
def gauss_model(params, *unused):
    z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ppl.sample("x", dist.Normal(z, 1.0))


@ppl.gen
def gauss_guide(params):
    ppl.sample("z", dist.Normal(params["loc"], jnp.exp(params["log_scale"])))


GAUSS_PARAMS = {"loc": jnp.float32(-0.3), "log_scale": jnp.float32(-0.4)}


def gauss_elbo(loc, log_scale, x):
    """E_q[log N(z; 0, 1) + log N(x; z, 1) - log N(z; loc, s)], in closed form."""
    s2 = jnp.exp(2 * log_scale)
    log_prior = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (loc**2 + s2)
    log_lik = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * ((x - loc) ** 2 + s2)
    entropy = 0.5 * jnp.log(2 * jnp.pi) + log_scale + 0.5
    return log_prior + log_lik + entropy


def gauss_elbo_of(params):
    return gauss_elbo(params["loc"], params["log_scale"], X_OBS)


def test_analytic_elbo_gradient_is_the_hand_derived_one():
    grads = jax.grad(gauss_elbo_of)(GAUSS_PARAMS)
    loc, s2 = GAUSS_PARAMS["loc"], jnp.exp(2 * GAUSS_PARAMS["log_scale"])
    np.testing.assert_allclose(grads["loc"], X_OBS - 2 * loc, rtol=1e-6)
    np.testing.assert_allclose(grads["log_scale"], 1 - 2 * s2, rtol=1e-5)
    # at the posterior N(x/2, 1/2) the ELBO is log p(x) and stationary
    posterior = {"loc": jnp.float32(X_OBS / 2), "log_scale": jnp.float32(0.5 * np.log(0.5))}
    np.testing.assert_allclose(gauss_elbo_of(posterior), dist.Normal(0.0, 2**0.5).log_prob(X_OBS), rtol=1e-6)
    assert np.allclose(jax.tree.leaves(jax.grad(gauss_elbo_of)(posterior)), 0.0, atol=1e-6)


@pytest.mark.parametrize("make", [vi.elbo, vi.stl_elbo], ids=["elbo", "stl_elbo"])
def test_gaussian_elbo_matches_closed_form(make):
    assert_objective_unbiased(make(gauss_model, gauss_guide), gauss_elbo_of, GAUSS_PARAMS, {"x": X_OBS})


def test_stl_gradient_vanishes_at_the_posterior():
    """At q = posterior, log p(z, x) - log q(z) = log p(x) for every z: the
    path derivative is exactly zero, the ordinary ELBO's gradient is not."""
    posterior = {"loc": jnp.float32(X_OBS / 2), "log_scale": jnp.float32(0.5 * np.log(0.5))}
    stl = monte_carlo(lambda k: vi.stl_elbo(gauss_model, gauss_guide).grad_estimate(k, posterior, {"x": X_OBS}), 4, 3)
    plain = monte_carlo(lambda k: vi.elbo(gauss_model, gauss_guide).grad_estimate(k, posterior, {"x": X_OBS}), 4, 3)
    assert np.allclose(jax.tree.leaves(stl), 0.0, atol=1e-5)
    assert np.max(np.abs(np.asarray(plain["log_scale"]))) > 0.01


def test_per_datum_sums_unbiased_per_datum_elbos():
    """An amortised guide N(w x_i + b, exp(log_scale)); the exact objective is
    the sum over data of the closed-form ELBO at loc = w x_i + b."""

    @ppl.gen
    def amortised(params, x):
        ppl.sample("z", dist.Normal(params["w"] * x + params["b"], jnp.exp(params["log_scale"])))

    xs = jnp.array([2.0, -0.5, 0.7, 3.1])
    params = {"w": jnp.float32(0.3), "b": jnp.float32(0.2), "log_scale": jnp.float32(-0.2)}
    exact = lambda p: jnp.sum(gauss_elbo(p["w"] * xs + p["b"], p["log_scale"], xs))
    objective = vi.per_datum(vi.elbo(gauss_model, amortised), in_axes=(0, 0))
    assert_objective_unbiased(objective, exact, params, {"x": xs}, xs, n=20_000)
    # with_data_scale multiplies the whole estimate
    scaled_objective = objective.with_data_scale(2.5)
    run = lambda o, k: o.estimate(k, params, {"x": xs}, xs)
    plain, scaled = jax.jit(lambda k: (run(objective, k), run(scaled_objective, k)))(jax.random.key(5))
    np.testing.assert_allclose(scaled, 2.5 * plain, rtol=1e-6)


def test_iwelbo_rises_to_the_log_marginal_likelihood():
    """Guide = the prior N(0, 1) (ignores the data). IWELBO(K) increases with
    K; its bias is -chi2(posterior || q) / (2K) + O(1/K^2) (delta method),
    here chi2 = 1.25 in closed form, so at K = 500 the gap to log p(x) is
    about 0.00125, and must lie in [0, 2 * chi2 / (2K)] up to K_SE * SE."""
    prior_guide = {"loc": jnp.float32(0.0), "log_scale": jnp.float32(0.0)}
    log_px = float(dist.Normal(0.0, 2**0.5).log_prob(X_OBS))
    chi2 = _chi2_gaussian(post_mean=X_OBS / 2, post_var=0.5, q_mean=0.0, q_var=1.0)
    assert abs(chi2 - 1.25) < 0.01  # sanity: E_prior[w^2] / E[w]^2 = 2.25 for this model
    means, ses = [], []
    for num_particles, n in [(1, 20_000), (5, 20_000), (50, 20_000), (500, 10_000)]:
        objective = vi.iwelbo(gauss_model, gauss_guide, num_particles)
        values = monte_carlo(lambda k, o=objective: o.estimate(k, prior_guide, {"x": X_OBS}), n, seed=num_particles)
        means.append(values.mean())
        ses.append(values.std() / np.sqrt(n))
    # K = 1 is the ELBO, in closed form
    assert abs(means[0] - gauss_elbo(0.0, 0.0, X_OBS)) < K_SE * ses[0]
    for i in range(3):  # monotone up to SE, and each step a clear rise here
        assert means[i + 1] - means[i] > -K_SE * np.hypot(ses[i], ses[i + 1]), (means, ses)
    assert means[1] - means[0] > 0.5 and means[2] - means[1] > 0.05, means
    gap = log_px - means[3]
    assert -K_SE * ses[3] < gap < chi2 / 500 + K_SE * ses[3], (gap, ses[3], chi2 / 1000)
    assert ses[3] < 0.001  # the check has power at the scale of the bias


def _chi2_gaussian(post_mean, post_var, q_mean, q_var):
    """E_q[(pi / q)^2] - 1 for Gaussians pi and q: integral of pi^2 / q."""
    precision = 2 / post_var - 1 / q_var
    linear = 2 * post_mean / post_var - q_mean / q_var
    const = -(post_mean**2) / post_var + q_mean**2 / (2 * q_var)
    integral = np.sqrt(q_var / precision) / post_var * np.exp(linear**2 / (2 * precision) + const)
    return integral - 1


# ----- a discrete model: z in {0, 1, 2}, b in {0, 1}, x | z, b ~ N(MU[z] + SHIFT b, 1) -----

MU = jnp.array([-1.0, 0.5, 2.0])
SHIFT, X_DISCRETE = 1.5, 0.8
OBS = {"x": X_DISCRETE}


@ppl.gen
def model(params):
    z = ppl.sample("z", dist.Categorical(logits=params["theta"]))
    b = ppl.sample("b", dist.Bernoulli(logits=params["beta"]))
    ppl.sample("x", dist.Normal(MU[z] + SHIFT * b, 1.0))


@ppl.gen
def guide(params):
    z = ppl.sample("z", dist.Categorical(logits=params["phi"]))
    ppl.sample("b", dist.Bernoulli(logits=params["psi"] + params["w"] * z))


PARAMS = {
    "theta": jnp.array([0.2, -0.5, 0.1]),
    "beta": jnp.float32(0.3),
    "phi": jnp.array([0.5, -0.3, -0.8]),
    "psi": jnp.float32(-0.4),
    "w": jnp.float32(0.6),
}
Z_VALUES = jnp.array([0, 0, 1, 1, 2, 2])  # the six joint values (z, b)
B_VALUES = jnp.array([0, 1, 0, 1, 0, 1])


def log_q_table(p):
    logits_b = p["psi"] + p["w"] * Z_VALUES
    return jax.nn.log_softmax(p["phi"])[Z_VALUES] + jax.nn.log_sigmoid((2 * B_VALUES - 1) * logits_b)


def log_p_table(p):
    log_prior = jax.nn.log_softmax(p["theta"])[Z_VALUES] + jax.nn.log_sigmoid((2 * B_VALUES - 1) * p["beta"])
    return log_prior + jax.scipy.stats.norm.logpdf(X_DISCRETE, MU[Z_VALUES] + SHIFT * B_VALUES, 1.0)


def enumerated(term, num_particles, held=False):
    """params -> E[term(log_p, log_q)] over ``num_particles`` iid draws from the
    guide (log_p, log_q: arrays over particles), summed over all 6^K tuples.
    ``held``: the draws' probabilities use the parameters held (as RWS draws
    them), so the gradient flows only through ``term``."""
    tuples = jnp.array(list(itertools.product(range(6), repeat=num_particles)))

    def expectation(p):
        log_q, log_p = log_q_table(p)[tuples], log_p_table(p)[tuples]
        log_prob = jnp.sum(sg(log_q) if held else log_q, axis=1)
        return jnp.sum(jnp.exp(log_prob) * term(log_p, log_q))

    return expectation


K = 3
exact_iwelbo = enumerated(lambda lp, lq: lme(lp - lq), K)
exact_renyi = enumerated(lambda lp, lq: lme(0.5 * (lp - lq)) / 0.5, K)  # alpha = 0.5
exact_rws_model = enumerated(lambda lp, lq: lme(lp - sg(lq)), K, held=True)
exact_rws_guide = enumerated(lambda lp, lq: jnp.sum(jax.nn.softmax(sg(lp - lq), axis=-1) * lq, axis=-1), K, held=True)


def exact_rws(p):
    return exact_rws_model(p) + exact_rws_guide(p)


DISCRETE_CASES = {
    "iwelbo": (lambda: vi.iwelbo(model, guide, K), exact_iwelbo),
    "renyi": (lambda: vi.renyi(model, guide, 0.5, K), exact_renyi),
    "vimco": (lambda: vi.vimco(model, guide, K), exact_iwelbo),  # VIMCO's expectation is the IWELBO's
    "rws_model": (lambda: vi.rws_model(model, guide, K), exact_rws_model),
    "rws_guide": (lambda: vi.rws_guide(model, guide, K), exact_rws_guide),
    "rws": (lambda: vi.rws(model, guide, K), exact_rws),
    # the ELBO of the SIR family normalize(model, x, guide, K) is the IWELBO(K) of the guide
    # (REINFORCE: enumerating the particles' and the resampling index's choices compiles slowly)
    "elbo-of-normalize": (
        lambda: vi.elbo(model, vi.normalize(model, OBS, guide, K), strategies={Distribution: Reinforce()}),
        exact_iwelbo,
    ),
}


@pytest.mark.parametrize("name", list(DISCRETE_CASES))
def test_discrete_objective_is_unbiased(name):
    make, exact = DISCRETE_CASES[name]
    assert_objective_unbiased(make(), exact, PARAMS, OBS, seed=1)


def test_references_have_the_expected_structure():
    """Sanity of the references: gradients are non-trivial where they must be,
    zero where the objective holds them (RWS), and the bounds are ordered."""
    g_model, g_guide = jax.jit(lambda p: (jax.grad(exact_rws_model)(p), jax.grad(exact_rws_guide)(p)))(PARAMS)
    assert np.allclose(g_model["phi"], 0.0) and np.allclose(g_guide["theta"], 0.0)
    assert np.max(np.abs(g_model["theta"])) > 0.05 and np.max(np.abs(g_guide["phi"])) > 0.02
    exact_elbo = enumerated(lambda lp, lq: (lp - lq)[:, 0], 1)
    log_px = lambda p: jax.nn.logsumexp(log_p_table(p))
    bounds = jax.jit(lambda p: (exact_elbo(p), exact_renyi(p), exact_iwelbo(p), log_px(p)))(PARAMS)
    assert bounds[0] < bounds[1] < bounds[2] < bounds[3], bounds  # ELBO < Renyi(1/2) < IWELBO < log p(x)


def test_renyi_at_alpha_zero_is_the_iwelbo():
    renyi = vi.renyi(gauss_model, gauss_guide, 0.0, 5)
    iwelbo = vi.iwelbo(gauss_model, gauss_guide, 5)
    run = lambda o, k: o.value_and_grad_estimate(k, GAUSS_PARAMS, {"x": X_OBS})
    a, b = jax.jit(lambda k: (run(renyi, k), run(iwelbo, k)))(jax.random.key(7))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6)


# ----- enumeration: exact gradients from single draws -----


@ppl.gen
def model_z(params):
    z = ppl.sample("z", dist.Categorical(logits=params["theta"]))
    ppl.sample("x", dist.Normal(MU[z], 1.0))


@ppl.gen
def guide_z(params):
    ppl.sample("z", dist.Categorical(logits=params["phi"]))


def exact_elbo_z(p):
    log_q = jax.nn.log_softmax(p["phi"])
    log_p = jax.nn.log_softmax(p["theta"]) + jax.scipy.stats.norm.logpdf(X_DISCRETE, MU, 1.0)
    return jnp.sum(jnp.exp(log_q) * (log_p - log_q))


@pytest.mark.parametrize(
    "case",
    [
        (model_z, guide_z, {"theta": PARAMS["theta"], "phi": PARAMS["phi"]}, exact_elbo_z),
        (model, guide, PARAMS, enumerated(lambda lp, lq: (lp - lq)[:, 0], 1)),  # two nested enumerations
    ],
    ids=["one-categorical", "categorical-then-bernoulli"],
)
def test_enumerated_elbo_is_exact(case):
    model_, guide_, params, exact = case
    exact_value, exact_grads = jax.jit(jax.value_and_grad(exact))(params)
    objective = vi.elbo(model_, guide_)
    assert_exact_for_every_key(objective, exact_value, exact_grads, params)


def assert_exact_for_every_key(objective, exact_value, exact_grads, params, n=3):
    values, grads = monte_carlo(lambda k: objective.value_and_grad_estimate(k, params, OBS), n, seed=8)
    np.testing.assert_allclose(values, np.full(n, exact_value), rtol=1e-5, atol=1e-6)
    for name in params:
        expected = np.broadcast_to(exact_grads[name], grads[name].shape)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)


# ----- hierarchical VI: joint guide u ~ Bern(a), z | u ~ Cat(C[u]); reverse r(u | z) = Bern(r[z]) -----


@ppl.gen
def joint_guide(params):
    u = ppl.sample("u", dist.Bernoulli(logits=params["a"]))
    ppl.sample("z", dist.Categorical(logits=params["C"][u]))


@ppl.gen
def reverse(selected, params):
    ppl.sample("u", dist.Bernoulli(logits=params["r"][selected["z"]]))


HVI_PARAMS = {
    "theta": jnp.array([0.2, -0.5, 0.1]),
    "a": jnp.float32(0.4),
    "C": jnp.array([[0.5, -0.3, -0.8], [-0.6, 0.9, 0.2]]),
    "r": jnp.array([0.3, -0.7, 1.1]),
}


def exact_diwhvi(num_particles, num_inner):
    """E[lme_k(log p(z_k, x) - lme_j(log q(u_kj, z_k) - log r(u_kj | z_k)))],
    (u_k1, z_k) ~ q jointly, u_kj ~ r(. | z_k) for j > 1, all enumerated."""
    configs = jnp.array([(z, *us) for z in range(3) for us in itertools.product(range(2), repeat=num_inner)])
    tuples = configs[jnp.array(list(itertools.product(range(len(configs)), repeat=num_particles)))]
    z, us = tuples[..., 0], tuples[..., 1:]  # (T, K), (T, K, M)

    def expectation(p):
        log_q = lambda u, z_: jax.nn.log_sigmoid((2 * u - 1) * p["a"]) + jax.nn.log_softmax(p["C"], -1)[u, z_]
        log_r = lambda u, z_: jax.nn.log_sigmoid((2 * u - 1) * p["r"][z_])
        log_p = jax.nn.log_softmax(p["theta"])[z] + jax.scipy.stats.norm.logpdf(X_DISCRETE, MU[z], 1.0)
        zz = z[..., None]
        log_prob = log_q(us[..., 0], z) + jnp.sum(log_r(us[..., 1:], zz), -1)  # (T, K)
        log_q_hat = lme(log_q(us, zz) - log_r(us, zz))
        return jnp.sum(jnp.exp(jnp.sum(log_prob, -1)) * lme(log_p - log_q_hat))

    return expectation


def test_hvi_with_enumerated_choices_is_exact():
    """One auxiliary particle: every choice is enumerated, the estimate exact."""
    exact_value, exact_grads = jax.jit(jax.value_and_grad(exact_diwhvi(1, 1)))(HVI_PARAMS)
    objective = vi.hvi(model_z, joint_guide, "z", reverse)
    assert_exact_for_every_key(objective, exact_value, exact_grads, HVI_PARAMS)


def test_iwhvi_is_unbiased():
    iwhvi = vi.iwhvi(model_z, joint_guide, "z", reverse, 3)
    assert_objective_unbiased(iwhvi, exact_diwhvi(1, 3), HVI_PARAMS, OBS, n=20_000, seed=3)


def test_diwhvi_is_unbiased():
    # REINFORCE without baseline: enumeration, or a sampled baseline, doubles
    # the program at each of the nested choices and compiles several times slower
    diwhvi = vi.diwhvi(model_z, joint_guide, "z", reverse, 2, 2, strategies={Distribution: Reinforce(baseline=None)})
    assert_objective_unbiased(diwhvi, exact_diwhvi(2, 2), HVI_PARAMS, OBS, seed=4)


# ----- minibatch scaling -----


def test_with_data_scale_counts_data_and_local_latents():
    """At a fixed key, the estimate is log p(z) + s log p(x | z) - log q(z)
    (global z), and s times the whole log weight when z is local."""
    key = jax.random.key(11)
    s = 3.0
    z = gauss_guide.simulate(key, (GAUSS_PARAMS,)).choices["z"]  # _log_weight gives the guide the key itself
    log_prior = dist.Normal(0.0, 1.0).log_prob(z)
    log_lik = dist.Normal(z, 1.0).log_prob(X_OBS)
    log_q = dist.Normal(GAUSS_PARAMS["loc"], jnp.exp(GAUSS_PARAMS["log_scale"])).log_prob(z)
    base = vi.elbo(gauss_model, gauss_guide)
    local = vi.elbo(gauss_model, gauss_guide, local=("z",))
    objectives = (base, base.with_data_scale(s), local.with_data_scale(s))
    plain, global_z, local_z = jax.jit(lambda k: [o.estimate(k, GAUSS_PARAMS, {"x": X_OBS}) for o in objectives])(key)
    np.testing.assert_allclose(plain, log_prior + log_lik - log_q, rtol=1e-6)
    np.testing.assert_allclose(global_z, log_prior + s * log_lik - log_q, rtol=1e-6)
    np.testing.assert_allclose(local_z, s * (log_prior + log_lik - log_q), rtol=1e-6)


# ----- errors -----


def test_objective_argument_errors():
    with pytest.raises(ValueError, match=r"vimco needs num_particles >= 2, got 1"):
        vi.vimco(model, guide, 1)
    with pytest.raises(ValueError, match=r"alpha = 1 is the ELBO; use vi.elbo"):
        vi.renyi(model, guide, 1.0, K)
