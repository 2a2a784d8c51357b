"""The VI constructs (``sim``, ``density``, ``marginal``, ``normalize``)
against exact answers: closed-form Gaussian marginals and posteriors, and a
discrete SIR family enumerated exactly. Monte Carlo tolerances are K_SE
standard errors (SE = std / sqrt(N)), seeds fixed."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ppl
from ppl import dist
from ppl.inference import vi

K_SE = 4.5
N = 20_000


def monte_carlo(fn, n=N, seed=0):
    out = jax.jit(jax.vmap(fn))(jax.random.split(jax.random.key(seed), n))
    return jax.tree.map(lambda x: np.asarray(x, np.float64), out)


def assert_mean_close(samples, exact, name=""):
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
    assert np.all(np.abs(mean - exact) < K_SE * se + 1e-7), f"{name}: mean {mean}, exact {exact}, SE {se}"


def test_logmeanexp():
    np.testing.assert_allclose(vi.logmeanexp(jnp.log(jnp.array([1.0, 2.0, 6.0]))), np.log(3.0), rtol=1e-6)
    np.testing.assert_allclose(vi.logmeanexp(jnp.array([[0.0, 1000.0], [0.0, 1000.0]]), axis=1), 1000 - np.log(2.0))


# ----- scale= -----


@ppl.gen
def leaf(mean):
    return ppl.sample("y", dist.Normal(mean, 2.0))


@ppl.gen
def scaled_model(loc):
    z = ppl.sample("z", dist.Normal(loc, 1.0))
    ppl.sample("xs", dist.Normal(z, 0.5).expand([3]))
    ppl.sample("sub", leaf(z))


def test_density_scale_multiplies_the_named_addresses():
    choices = {"z": 0.4, "xs": jnp.array([0.1, 1.2, -0.3]), "sub": {"y": 2.5}}
    z = 0.4
    log_z = dist.Normal(-0.2, 1.0).log_prob(z)
    log_xs = jnp.sum(dist.Normal(z, 0.5).log_prob(choices["xs"]))
    log_y = dist.Normal(z, 2.0).log_prob(2.5)
    scale = {"xs": 3.0, "sub/y": 0.25, "absent": 7.0}
    plain, scaled = jax.jit(
        lambda c: (vi.density(scaled_model, c, (-0.2,)), vi.density(scaled_model, c, (-0.2,), scale=scale))
    )(choices)
    np.testing.assert_allclose(plain, log_z + log_xs + log_y, rtol=1e-6)
    np.testing.assert_allclose(scaled, log_z + 3.0 * log_xs + 0.25 * log_y, rtol=1e-6)


def test_sim_scale_multiplies_the_named_addresses():
    key = jax.random.key(4)
    (c0, plain), (c1, scaled) = jax.jit(
        lambda k: (vi.sim(scaled_model, k, (-0.2,)), vi.sim(scaled_model, k, (-0.2,), scale={"z": 2.0, "sub": 3.0}))
    )(key)
    for a, b in zip(jax.tree.leaves(c0), jax.tree.leaves(c1)):  # the same draw
        np.testing.assert_array_equal(a, b)
    z = c0["z"]
    log_z = dist.Normal(-0.2, 1.0).log_prob(z)
    log_xs = jnp.sum(dist.Normal(z, 0.5).log_prob(c0["xs"]))
    log_y = dist.Normal(z, 2.0).log_prob(c0["sub"]["y"])
    np.testing.assert_allclose(plain, log_z + log_xs + log_y, rtol=1e-5)
    np.testing.assert_allclose(scaled, 2.0 * log_z + log_xs + 3.0 * log_y, rtol=1e-5)


# ----- marginal: u ~ N(0, 1), z | u ~ N(u, 1); the z-marginal is N(0, 2), u | z ~ N(z / 2, 1 / 2) -----


@ppl.gen
def joint():
    u = ppl.sample("u", dist.Normal(0.0, 1.0))
    ppl.sample("z", dist.Normal(u, 1.0))


@ppl.gen
def reverse(selected):  # wider than u | z, so the weights are bounded
    ppl.sample("u", dist.Normal(0.3 * selected["z"] + 0.2, 0.9))


Z0 = 1.3


@pytest.mark.parametrize("proposal", [None, reverse], ids=["prior", "reverse-model"])
def test_marginal_density_is_unbiased_in_exp(proposal):
    family = vi.marginal(joint, "z", proposal, num_particles=3)
    estimates = monte_carlo(lambda k: jnp.exp(vi.density(family, {"z": Z0}, (), key=k)))
    exact = float(jnp.exp(dist.Normal(0.0, 2**0.5).log_prob(Z0)))
    assert_mean_close(estimates, exact, "exp(density)")
    assert estimates.std() > 1e-3  # an estimate, not the exact density


def test_marginal_sim_draws_the_selected_addresses_from_the_marginal():
    """Only z comes back, distributed N(0, 2); with one particle the log
    weight's exp(-.) is unbiased for 1 / q(z): E[exp(-w) 1{a < z < b}] = b - a."""
    family = vi.marginal(joint, ppl.select("z"), reverse, num_particles=1)
    choices, _ = vi.sim(family, jax.random.key(0), ())
    assert set(ppl.flatten(choices)) == {"z"}
    a, b = -1.0, 2.0
    z, log_w = monte_carlo(lambda k: vi.sim(family, k, ()), seed=1)
    z = z["z"]
    assert_mean_close(z, 0.0, "E z")
    assert_mean_close(z**2, 2.0, "E z^2")
    assert_mean_close(np.exp(-log_w) * ((a < z) & (z < b)), b - a, "E[exp(-w) 1{a<z<b}]")


# ----- normalize: z ~ N(0, 1), x | z ~ N(z, 1), x = 2; the posterior is N(1, 1/2) -----


@ppl.gen
def gauss_model():
    z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ppl.sample("x", dist.Normal(z, 1.0))


@ppl.gen
def shifted_proposal():
    ppl.sample("z", dist.Normal(0.5, 1.2))


@pytest.mark.parametrize("proposal", [None, shifted_proposal], ids=["prior", "proposal"])
def test_normalize_with_many_particles_gives_the_posterior(proposal):
    """SIR's own bias in E[h] is -(1/P) E_post[(post / q)(h - E_post h)] + O(1/P^2):
    with the prior as q and P = 500 particles, 0.0015 for the mean and 0.0003 for
    the second central moment (Gaussian integrals), below 0.25 SE here."""
    posterior = vi.normalize(gauss_model, {"x": 2.0}, proposal, num_particles=500)
    z = monte_carlo(lambda k: vi.sim(posterior, k, ())[0]["z"], n=10_000, seed=2)
    assert set(ppl.flatten(vi.sim(posterior, jax.random.key(0), ())[0])) == {"z"}
    assert_mean_close(z, 1.0, "posterior mean")
    assert_mean_close((z - 1.0) ** 2, 0.5, "posterior variance")


def test_normalize_with_one_particle_is_the_proposal():
    key = jax.random.key(3)
    for proposal, log_q in [
        (shifted_proposal, lambda z: dist.Normal(0.5, 1.2).log_prob(z)),
        (None, lambda z: dist.Normal(0.0, 1.0).log_prob(z)),  # the prior
    ]:
        family = vi.normalize(gauss_model, {"x": 2.0}, proposal, num_particles=1)
        both = jax.jit(lambda k, f=family: (vi.sim(f, k, ()), vi.density(f, {"z": 0.7}, (), key=k)))
        (choices, log_w), log_d = both(key)
        np.testing.assert_allclose(log_w, log_q(choices["z"]), rtol=1e-5)
        np.testing.assert_allclose(log_d, log_q(0.7), rtol=1e-5)


# ----- a discrete SIR family: z in {0, 1, 2}, exact by enumerating the particles -----

MU = jnp.array([-1.0, 0.5, 2.0])
THETA = jnp.array([0.2, -0.5, 0.1])
PHI = jnp.array([0.9, -0.3, -0.8])


@ppl.gen
def cat_model():
    z = ppl.sample("z", dist.Categorical(logits=THETA))
    ppl.sample("x", dist.Normal(MU[z], 1.0))


@ppl.gen
def cat_proposal():
    ppl.sample("z", dist.Categorical(logits=PHI))


def sir_probabilities(num_particles):
    """q_SIR(z) = sum over particle tuples of prod q(z_k) * sum_{k: z_k = z} w_k / sum w."""
    log_q = jax.nn.log_softmax(PHI)
    log_w = jax.nn.log_softmax(THETA) + jax.scipy.stats.norm.logpdf(0.8, MU, 1.0) - log_q
    tuples = jnp.array(list(itertools.product(range(3), repeat=num_particles)))
    prob = jnp.exp(jnp.sum(log_q[tuples], 1))
    pick = jax.nn.softmax(log_w[tuples], axis=1)
    return np.array([float(jnp.sum(prob * jnp.sum(pick * (tuples == z), 1))) for z in range(3)])


def test_discrete_sir_density_is_unbiased_and_sim_matches_it():
    family = vi.normalize(cat_model, {"x": 0.8}, cat_proposal, num_particles=3)
    exact = sir_probabilities(3)
    assert abs(exact.sum() - 1.0) < 1e-5
    assert np.max(np.abs(exact - np.asarray(jax.nn.softmax(PHI)))) > 0.05  # SIR moved away from q
    densities = monte_carlo(
        lambda k: jnp.exp(jax.vmap(lambda z: vi.density(family, {"z": z}, (), key=k))(jnp.arange(3))), seed=5
    )
    assert_mean_close(densities, exact, "exp(SIR density)")
    draws = monte_carlo(lambda k: vi.sim(family, k, ())[0]["z"], seed=6)
    frequencies = np.stack([draws == z for z in range(3)], axis=1).astype(np.float64)
    assert_mean_close(frequencies, exact, "SIR draw frequencies")


# ----- errors -----


def test_construct_errors():
    family = vi.marginal(joint, "z", num_particles=2)
    with pytest.raises(TypeError, match=r"density of a Marginal is an estimate: pass key="):
        vi.density(family, {"z": 0.1}, ())
    with pytest.raises(TypeError, match=r"density of a Normalized is an estimate: pass key="):
        vi.density(vi.normalize(gauss_model, {"x": 2.0}), {"z": 0.1}, ())
    with pytest.raises(TypeError, match=r"scale= applies to generative functions, not to a Marginal"):
        vi.sim(family, jax.random.key(0), (), scale={"z": 2.0})
    with pytest.raises(ValueError, match=r"marginal: num_particles must be >= 1, got 0"):
        vi.marginal(joint, "z", num_particles=0)
    with pytest.raises(ValueError, match=r"normalize: num_particles must be >= 1, got 0"):
        vi.normalize(gauss_model, {"x": 2.0}, num_particles=0)
