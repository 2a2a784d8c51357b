"""Reparameterisation through acceptance-rejection samplers (Naesseth,
Ruiz, Linderman and Blei 2017, "Reparameterization gradients through
acceptance-rejection sampling algorithms").

A Gamma draw by Marsaglia and Tsang's method is z = h(eps, a) =
(a - 1/3) (1 + eps / sqrt(9 a - 3))^3 for a standard normal eps that the
sampler accepts. The accepted eps has density pi(eps; a) = q(h(eps, a); a)
|dh/deps|, which depends on a, so the gradient of E f(z) has two terms:
the pathwise one through h with eps held, and a score-function correction
f(h(eps, a)) d/da log pi(eps; a). Shapes below 1 are boosted: z = z' u^(1/a)
with z' ~ Gamma(a + 1) and an independent uniform u (pathwise through u^(1/a)).
Beta and Dirichlet are normalised Gammas; a rate divides the draw.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import gammaln
from numpyro.distributions import Beta, Dirichlet, ExpandedDistribution, Gamma

from ppl.levels import _split_keys
from ppl.transforms.strategies import fold_key

__all__ = ["RejectionReparam", "gamma_by_rejection"]

sg = lax.stop_gradient


class RejectionReparam:
    """The gradient strategy of Naesseth et al. (2017) for Gamma, Beta and
    Dirichlet choices: pathwise through the accepted proposal of Marsaglia
    and Tsang's sampler, plus the score-function correction of the
    acceptance step. Its values are exact draws of the distribution.

    - ``boost``: B, shape augmentation: a Gamma(a) draw is a Gamma(a + B)
      draw times u_1^(1/a) ... u_B^(1/(a + B - 1)), pathwise in the u's; the
      correction's score shrinks as the proposal's shape grows (at least 1
      is used for shapes below 1, where the sampler needs it).
    - ``baseline``: None or ``"sampled"`` (the rest of the program at an
      independent draw, subtracted from the correction's learning signal:
      one more run of the rest). With the default boost the correction is
      small and a baseline buys little (benchmarks/RESULTS.md, section J).

    >>> RejectionReparam()
    RejectionReparam(boost=4, baseline=None)
    """

    def __init__(self, boost=4, baseline=None):
        if isinstance(boost, bool) or not isinstance(boost, int) or boost < 0:
            raise ValueError(f"boost must be an integer >= 0, got {boost!r}")
        if baseline not in (None, "sampled"):
            raise ValueError(f'RejectionReparam baseline must be None or "sampled", got {baseline!r}')
        self.boost, self.baseline = boost, baseline

    def __repr__(self):
        return f"RejectionReparam(boost={self.boost}, baseline={self.baseline!r})"

    def surrogate(self, site, continuation):
        value, score = _draw(site, self.boost)
        rest = continuation(value)
        baseline = 0.0
        if self.baseline == "sampled":  # independent of this draw, so the estimator stays unbiased
            other, _ = _draw(site._replace(key=fold_key(site.key, 1)), self.boost)
            baseline = sg(continuation(sg(other), plain=True))
        return rest + sg(rest - baseline) * (score - sg(score))

    def in_block(self, site, block):
        """Inside a scan: the correction's score joins the block's, whose
        learning signal is the value of the whole rest of the program."""
        value, score = _draw(site, self.boost)
        block.add_score(score, self.baseline)
        return value


def _draw(site, boost):
    """A draw of the site (pathwise in its parameters) and the summed log
    density of the accepted proposals of its active elements."""

    def one(key, active, *leaves):
        value, log_pi = _by_rejection(site, key, site.spec.rebuild(leaves), boost)
        return value, jnp.where(active, log_pi, 0.0)

    fn = one
    for depth, level in enumerate(site.levels):
        fn = _split_keys(fn, level) if level.joint else jax.vmap(fn, in_axes=(level.key_axis, *level.leaf_axes), axis_size=level.axis_size)
    value, log_pi = fn(site.key, site.active, *site.leaves)
    return value, jnp.sum(log_pi)


def _by_rejection(site, key, distribution, boost):
    base = distribution
    while isinstance(base, ExpandedDistribution):
        base = base.base_dist
    shape = distribution.batch_shape
    if isinstance(base, Gamma):
        g, log_pi = gamma_by_rejection(key, jnp.broadcast_to(base.concentration, shape), boost)
        return g / jnp.broadcast_to(base.rate, shape), jnp.sum(log_pi)
    if isinstance(base, Beta):
        k1, k0 = jax.random.split(key)
        g1, log_pi1 = gamma_by_rejection(k1, jnp.broadcast_to(base.concentration1, shape), boost)
        g0, log_pi0 = gamma_by_rejection(k0, jnp.broadcast_to(base.concentration0, shape), boost)
        return g1 / (g1 + g0), jnp.sum(log_pi1) + jnp.sum(log_pi0)
    if isinstance(base, Dirichlet):
        g, log_pi = gamma_by_rejection(key, jnp.broadcast_to(base.concentration, shape + distribution.event_shape), boost)
        return g / jnp.sum(g, axis=-1, keepdims=True), jnp.sum(log_pi)
    raise TypeError(
        f"address {site.name!r}: RejectionReparam reparameterises Gamma, Beta and Dirichlet choices "
        f"(through Marsaglia and Tsang's Gamma sampler), not {type(base).__name__}"
    )


def gamma_by_rejection(key, concentration, boost=4):
    """``(draws, log pi)``: Gamma(concentration, 1) draws, differentiable in
    ``concentration`` along h with the accepted eps held, and per element
    the log density of that eps, log q(h(eps, a'); a') + log |dh/deps|, for
    the proposal's shape a' = a + B (B = ``boost``, at least 1 below shape 1).

    >>> g, log_pi = gamma_by_rejection(jax.random.key(0), jnp.array([0.5, 2.0, 30.0]))
    >>> g.shape, bool(jnp.all(g > 0)), bool(jnp.all(jnp.isfinite(log_pi)))
    ((3,), True, True)
    """
    concentration = jnp.asarray(concentration, jnp.promote_types(jnp.result_type(concentration), jnp.float32))
    normal_key, boost_key = jax.random.split(key)
    steps = jnp.where(concentration < 1.0, max(boost, 1), boost)  # per element: how many u's
    shape = concentration + steps
    d = shape - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    eps = sg(_accepted_normals(normal_key, sg(d), sg(c)))
    root = 1.0 + c * eps
    g = d * root**3
    log_q = (shape - 1.0) * jnp.log(g) - g - gammaln(shape)
    log_pi = log_q + jnp.log(3.0 * d * c) + 2.0 * jnp.log(jnp.abs(root))
    # Gamma(a) = Gamma(a + B) * prod_i u_i^(1 / (a + i)): one uniform per step, in logs
    count = max(boost, 1)
    tiny = jnp.finfo(concentration.dtype).tiny
    u = jax.random.uniform(boost_key, (count,) + jnp.shape(concentration), concentration.dtype, minval=tiny)
    offsets = jnp.arange(count, dtype=concentration.dtype).reshape((count,) + (1,) * jnp.ndim(concentration))
    used = offsets < steps
    log_g = jnp.log(g) + jnp.sum(jnp.where(used, jnp.log(u) / (concentration + offsets), 0.0), axis=0)
    return jnp.exp(log_g), log_pi


def _accepted_normals(key, d, c):
    """Per element, the first standard normal eps that Marsaglia and Tsang's
    test accepts (v = (1 + c eps)^3 > 0 and log u < eps^2 / 2 + d - d v + d log v);
    all elements together, until every one has accepted (an acceptance rate
    above 0.95 for every shape, so a few rounds)."""

    def untried(state):
        return ~jnp.all(state[2])

    def attempt(state):
        key, eps, accepted = state
        key, normal_key, uniform_key = jax.random.split(key, 3)
        proposal = jax.random.normal(normal_key, d.shape, d.dtype)
        v = (1.0 + c * proposal) ** 3
        log_u = jnp.log(jax.random.uniform(uniform_key, d.shape, d.dtype))
        safe_v = jnp.where(v > 0, v, 1.0)
        ok = (v > 0) & (log_u < 0.5 * proposal**2 + d - d * safe_v + d * jnp.log(safe_v))
        take = ok & ~accepted
        return key, jnp.where(take, proposal, eps), accepted | ok

    start = (key, jnp.zeros(d.shape, d.dtype), jnp.zeros(d.shape, bool))
    return lax.while_loop(untried, attempt, start)[1]
