"""The systems compared in the importance-sampling benchmark.

Polynomial regression with outliers: ``coeffs ~ Normal(0, 1)^3``; per point
``outlier ~ Bernoulli(0.1)``, ``y ~ Normal(poly(x), 0.1)`` if inlier else
``Normal(0, 10)``. Each system does likelihood weighting: coefficients and
outlier flags are drawn from the prior inside the timed call, and
``log_weight = log p(ys | coeffs, outliers)``. Each returns the latent samples
and the log weights.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy.special import logsumexp

import ppl
from ppl import dist

__all__ = [
    "make_data",
    "make_ppl_model",
    "ppl_model",
    "ppl_importance",
    "hand_importance",
    "numpyro_importance",
    "exact_log_marginal_likelihood",
    "DIAGNOSTICS",
]

OUTLIER_PROB, INLIER_SCALE, OUTLIER_SCALE = 0.1, 0.1, 10.0
TRUE_COEFFS = (0.4, -0.9, 0.7)


def poly(x, coeffs):
    return coeffs[0] + coeffs[1] * x + coeffs[2] * x**2


def make_data(num_points=50, seed=0):
    """``(xs, ys)`` drawn from the model with fixed coefficients (NumPy RNG)."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-1.0, 1.0, num_points)
    outlier = rng.random(num_points) < OUTLIER_PROB
    ys = np.where(outlier, rng.normal(0.0, OUTLIER_SCALE, num_points), poly(xs, TRUE_COEFFS) + rng.normal(0.0, INLIER_SCALE, num_points))
    return jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)


# ----- ppl: a per-point ppl.cond inside point.vmap(in_axes=(0, None)) ------------


def make_ppl_model():
    """A fresh model object (so that nothing ppl or JAX cached for another is reused)."""

    @ppl.gen
    def point(x, coeffs):
        outlier = ppl.sample("outlier", dist.Bernoulli(OUTLIER_PROB))
        inlier_y, outlier_y = dist.Normal(poly(x, coeffs), INLIER_SCALE), dist.Normal(0.0, OUTLIER_SCALE)
        return ppl.sample("y", ppl.cond(outlier, outlier_y, inlier_y))

    @ppl.gen
    def model(xs):
        coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([3]))
        return ppl.sample("ys", point.vmap(in_axes=(0, None))(xs, coeffs))

    return model


ppl_model = make_ppl_model()


def ppl_importance(key, xs, ys, num_particles, chunk_size=None, model=None):
    """The public API call (jitted inside ppl)."""
    observations = {"ys": {"y": ys}}
    model = ppl_model if model is None else model
    return ppl.inference.importance(key, model, (xs,), observations, num_particles, chunk_size=chunk_size)


def ppl_outputs(result):
    """Latents and log weights of an ``ImportanceResult``, without broadcasting
    the choices ppl stores once (``result.traces`` would copy them per particle)."""
    particles = result.particles if hasattr(result, "particles") else result.traces
    return {"coeffs": particles.choices["coeffs"], "outlier": particles.choices["ys"]["outlier"]}, result.log_weights


# ----- hand-written JAX ------------------------------------------------------------


def normal_log_density(value, loc, scale):
    return -0.5 * ((value - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def _log_likelihood(coeffs, outlier, xs, ys):
    mean = poly(xs, [coeffs[..., i, None] for i in range(3)])
    inlier = normal_log_density(ys, mean, INLIER_SCALE)
    return jnp.sum(jnp.where(outlier, normal_log_density(ys, 0.0, OUTLIER_SCALE), inlier), axis=-1)


def _hand(key, xs, ys, num_particles):
    coeffs_key, outlier_key = jax.random.split(key)
    coeffs = jax.random.normal(coeffs_key, (num_particles, 3))
    # int32 like NumPyro's Bernoulli, which both libraries use
    outlier = jax.random.bernoulli(outlier_key, OUTLIER_PROB, (num_particles, xs.shape[0])).astype(jnp.int32)
    return {"coeffs": coeffs, "outlier": outlier}, _log_likelihood(coeffs, outlier, xs, ys)


hand_importance = jax.jit(_hand, static_argnums=3)


def _hand_chunked(key, xs, ys, num_particles, chunk_size):
    one = lambda k: jax.tree.map(lambda a: a[0], _hand(k, xs, ys, 1))
    return jax.lax.map(one, jax.random.split(key, num_particles), batch_size=chunk_size)


# ----- NumPyro: vmapped log_density over prior samples -----------------------------


def numpyro_model(xs, ys=None):
    coeffs = numpyro.sample("coeffs", nd.Normal(0.0, 1.0).expand([3]))
    with numpyro.plate("data", xs.shape[0]):
        outlier = numpyro.sample("outlier", nd.Bernoulli(OUTLIER_PROB))
        loc = jnp.where(outlier, 0.0, poly(xs, coeffs))
        scale = jnp.where(outlier, OUTLIER_SCALE, INLIER_SCALE)
        numpyro.sample("y", nd.Normal(loc, scale), obs=ys)


def _numpyro(key, xs, ys, num_particles):
    prior_model = handlers.block(numpyro_model, hide=["y"])

    def particle(particle_key):
        prior_trace = handlers.trace(handlers.seed(numpyro_model, particle_key)).get_trace(xs, ys)
        latents = {name: prior_trace[name]["value"] for name in ("coeffs", "outlier")}
        log_joint, _ = log_density(numpyro_model, (xs, ys), {}, latents)
        log_prior, _ = log_density(prior_model, (xs, ys), {}, latents)
        return latents, log_joint - log_prior

    return jax.vmap(particle)(jax.random.split(key, num_particles))


numpyro_importance = jax.jit(_numpyro, static_argnums=3)


# ----- exact reference for a few points ----------------------------------------------


def exact_log_marginal_likelihood(xs, ys):
    """log p(ys) by enumerating the 2^n outlier patterns; given a pattern the
    inliers are a Gaussian linear model with the coefficients integrated out."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    n = len(xs)
    terms = []
    for pattern in range(2**n):
        out = np.array([(pattern >> i) & 1 for i in range(n)], bool)
        term = out.sum() * np.log(OUTLIER_PROB) + (n - out.sum()) * np.log1p(-OUTLIER_PROB)
        term += np.sum(-0.5 * (ys[out] / OUTLIER_SCALE) ** 2 - np.log(OUTLIER_SCALE) - 0.5 * np.log(2 * np.pi))
        features = np.stack([np.ones_like(xs), xs, xs**2], axis=1)[~out]
        cov = features @ features.T + INLIER_SCALE**2 * np.eye(len(features))
        if len(features):
            _, logdet = np.linalg.slogdet(cov)
            y = ys[~out]
            term += -0.5 * (y @ np.linalg.solve(cov, y) + logdet + len(y) * np.log(2 * np.pi))
        terms.append(term)
    return float(logsumexp(terms))


# ----- diagnostics: hand-written JAX with ppl's costs added one at a time ---------------


def _site_seed(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF  # as ppl.gen.site_key


def _hand_ppl_keys(key, xs, ys, num_particles, per_element_keys=False, outputs=None, chunk_size=None):
    """Hand-written, with ppl's keys: ``fold_in`` per address under each particle's
    key; the outlier flags of one particle drawn jointly from one key (ppl's
    ``Vmap``), or with ``per_element_keys`` each from its own key, split per
    element and folded with the address (ppl's ``Vmap`` up to commit 90f7d18).
    ``outputs``: ``"log_density"`` adds the joint log density per particle;
    ``"trace"`` also the observed ys twice per particle (choices and retval)."""

    def particle(particle_key):
        coeffs = jax.random.normal(jax.random.fold_in(particle_key, _site_seed("coeffs")), (3,))
        ys_key = jax.random.fold_in(particle_key, _site_seed("ys"))
        if per_element_keys:
            draw = lambda k: jax.random.bernoulli(jax.random.fold_in(k, _site_seed("outlier")), OUTLIER_PROB)
            outlier = jax.vmap(draw)(jax.random.split(ys_key, xs.shape[0]))
        else:
            outlier = jax.random.bernoulli(jax.random.fold_in(ys_key, _site_seed("outlier")), OUTLIER_PROB, xs.shape)
        outlier = outlier.astype(jnp.int32)
        log_weight = _log_likelihood(coeffs, outlier, xs, ys)
        latents = {"coeffs": coeffs, "outlier": outlier}
        if outputs is None:
            return latents, log_weight
        log_prior = jnp.sum(normal_log_density(coeffs, 0.0, 1.0))
        log_prior += jnp.sum(jnp.where(outlier, jnp.log(OUTLIER_PROB), jnp.log1p(-OUTLIER_PROB)))
        if outputs == "log_density":
            return latents, log_prior + log_weight, log_weight
        return {**latents, "y": ys}, ys, log_prior + log_weight, log_weight

    keys = jax.random.split(key, num_particles)
    if chunk_size is None or num_particles <= chunk_size:
        return jax.vmap(particle)(keys)
    return jax.lax.map(particle, keys, batch_size=chunk_size)


@ppl.gen
def ppl_vectorised_model(xs):
    """The same model without the per-point vmap: one site per vector."""
    coeffs = ppl.sample("coeffs", dist.Normal(0.0, 1.0).expand([3]))
    outlier = ppl.sample("outlier", dist.Bernoulli(OUTLIER_PROB).expand([xs.shape[0]]))
    loc = jnp.where(outlier, 0.0, poly(xs, coeffs))
    return ppl.sample("y", dist.Normal(loc, jnp.where(outlier, OUTLIER_SCALE, INLIER_SCALE)))


def _ppl_vectorised(key, xs, ys, num_particles):
    return ppl.inference.importance(key, ppl_vectorised_model, (xs,), {"y": ys}, num_particles)


# name -> (jitted fn(key, xs, ys, num_particles), what it adds)
DIAGNOSTICS = {
    "hand, in lax.map chunks of 65536": (
        jax.jit(lambda k, x, y, n: _hand_chunked(k, x, y, n, 65536), static_argnums=3),
        "the hand-written program run in chunks of particles as ppl does (lax.map with batch_size)",
    ),
    "hand + ppl's keys": (
        jax.jit(_hand_ppl_keys, static_argnums=3),
        "hand-written, drawing exactly ppl's random numbers (as of 704afc8): a key per particle, fold_in per "
        "address, the 50 outlier flags drawn jointly from one key",
    ),
    "hand + ppl's keys + ppl's outputs + chunking": (
        jax.jit(lambda k, x, y, n: _hand_ppl_keys(k, x, y, n, outputs="trace", chunk_size=65536), static_argnums=3),
        "as above, also returning what ppl's importance materialises per particle: the observed ys twice "
        "(choices and retval) and the joint log density; in lax.map chunks of 65536",
    ),
    "hand + ppl's keys + log density + chunking": (
        jax.jit(lambda k, x, y, n: _hand_ppl_keys(k, x, y, n, outputs="log_density", chunk_size=65536), static_argnums=3),
        "as above without the per-particle copies of the observed ys (what storing them once would give)",
    ),
    "hand + per-element keys (ppl up to 90f7d18)": (
        jax.jit(lambda k, x, y, n: _hand_ppl_keys(k, x, y, n, per_element_keys=True), static_argnums=3),
        "hand-written with ppl's former Vmap keys: split(key, 50) per particle, then fold_in per address, "
        "one key per outlier flag",
    ),
    "ppl, chunk_size >= N": (
        jax.jit(lambda k, x, y, n: ppl_importance(k, x, y, n, chunk_size=n), static_argnums=3),
        "ppl without lax.map chunking (one vmap over all particles)",
    ),
    "ppl, vectorised model": (
        jax.jit(_ppl_vectorised, static_argnums=3),
        "ppl on the same model written with vector sites (no per-point vmap/cond)",
    ),
}
