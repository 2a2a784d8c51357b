"""Gradient strategies for random choices, one small rule each.

A strategy turns a random choice and its continuation (``value -> surrogate
of the rest of the program``) into a surrogate scalar: its value is an
unbiased estimate of the expectation, its gradient an unbiased estimate of
the expectation's gradient with respect to the distribution's parameters.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ppl.errors import format_address
from ppl.primitives import log_density_of, log_prob_function, sample_function

__all__ = ["Site", "Reparam", "Reinforce", "Enumerate", "MeasureValued", "choose_strategy"]

sg = lax.stop_gradient


class Site(NamedTuple):
    key: Any
    active: Any
    leaves: list
    address: tuple
    spec: Any
    levels: tuple
    placement: Any

    def draw(self, key=None):
        return sample_function(self.spec, self.levels)(self.key if key is None else key, self.active, *self.leaves)

    def log_prob(self, value):
        return log_prob_function(self.spec, self.levels)(value, self.active, *self.leaves)

    def element_log_probs(self, value):
        """Log density of each independent element of ``value`` (scalar events only)."""
        one = lambda v, active, *leaves: jnp.where(active, log_density_of(self.spec.rebuild(leaves), v), 0.0)
        for level in self.levels:
            one = jax.vmap(one, in_axes=(0, *level.leaf_axes), axis_size=level.axis_size)
        return one(value, self.active, *self.leaves)

    @property
    def name(self):
        return format_address(self.address)


class Reparam:
    """Pathwise derivative: differentiate through the sampler (NumPyro's
    ``rsample``, implicit reparameterisation for Gamma, Beta, Dirichlet)."""

    def surrogate(self, site, continuation):
        prototype = _template(site)
        if not prototype.has_rsample:
            raise TypeError(f"address {site.name!r}: {type(prototype).__name__} has no reparameterised sampler")
        return continuation(site.draw())


class Reinforce:
    """Score-function estimator. ``baseline``: ``None``, a number, or
    ``"sampled"`` (the default): the continuation's value at an independent
    draw, which lowers variance and keeps the estimator unbiased."""

    def __init__(self, baseline="sampled"):
        self.baseline = baseline

    def surrogate(self, site, continuation):
        value = sg(site.draw())
        rest = continuation(value)
        log_density = site.log_prob(value)
        baseline = self._baseline(site, continuation)
        return rest + (sg(rest) - baseline) * (log_density - sg(log_density))

    def _baseline(self, site, continuation):
        if self.baseline is None:
            return 0.0
        if self.baseline == "sampled":
            other = sg(site.draw(jax.random.fold_in(site.key, 1)))
            return sg(continuation(other))
        return self.baseline


class Enumerate:
    """Exact sum over a finite support. For a vectorised choice (independent
    elements), each element is enumerated with the others held at their
    sampled values: n x K continuations, run under ``vmap``, never K^n."""

    def surrogate(self, site, continuation):
        support = _support(site)
        value = sg(site.draw())
        if value.size == 1:  # one scalar choice: the exact expectation
            flat = lambda v: jnp.reshape(v, value.shape).astype(value.dtype)
            probs = jnp.exp(jax.vmap(lambda v: site.log_prob(flat(v)))(support))
            outs = jax.vmap(lambda v: continuation(flat(v)))(support)
            return jnp.sum(probs * outs)
        rest = continuation(value)
        return rest + _local_terms(site, value, support, continuation)


def _support(site):
    template = _template(site)
    if not template.has_enumerate_support or template.event_shape != ():
        raise TypeError(f"address {site.name!r}: {type(template).__name__} has no finite support to enumerate")
    return template.enumerate_support(expand=False).reshape(-1)


def _template(site):
    """One element's distribution (parameters zero under vmaps: shapes only)."""
    if not site.levels:
        return site.spec.rebuild(site.leaves)
    return site.spec.rebuild([jnp.zeros(s.shape, s.dtype) for s in site.spec.example_leaves])


def _local_terms(site, value, support, continuation):
    """sum over elements e and values k of (p_ek - sg p_ek) * sg(F(v with v_e = k))."""
    flat = value.reshape(-1)

    def replaced(e, k):
        return continuation(flat.at[e].set(k.astype(flat.dtype)).reshape(value.shape))

    elements = jnp.arange(flat.size)
    outs = jax.vmap(lambda k: jax.vmap(lambda e: replaced(e, k))(elements))(support)  # (K, E)
    probs = jnp.stack([jnp.exp(site.element_log_probs(jnp.full(value.shape, k, value.dtype))).reshape(-1) for k in support])
    return jnp.sum((probs - sg(probs)) * sg(outs))


class MeasureValued:
    """Measure-valued derivatives (weak derivatives): the gradient of each
    parameter is a difference of the continuation under two coupled
    distributions. Bernoulli, Categorical, Poisson and Normal."""

    def surrogate(self, site, continuation):
        if site.levels:
            raise TypeError(f"address {site.name!r}: measure-valued derivatives of vmapped choices are not supported yet")
        distribution = site.spec.rebuild(site.leaves)
        value = sg(site.draw())
        rest = continuation(value)
        name = type(distribution).__name__
        key = jax.random.fold_in(site.key, 2)
        if name in ("BernoulliProbs", "BernoulliLogits"):
            one, zero = jnp.ones_like(value), jnp.zeros_like(value)
            return rest + _scalar_term(distribution.probs, continuation(one) - continuation(zero))
        if name in ("CategoricalProbs", "CategoricalLogits"):
            support = jnp.arange(distribution.probs.shape[-1])
            outs = jax.vmap(lambda k: continuation(k.astype(value.dtype)))(support)
            return rest + jnp.sum((distribution.probs - sg(distribution.probs)) * sg(outs))
        if name == "Poisson":
            return rest + _scalar_term(distribution.rate, continuation(value + 1) - rest)
        if name == "Normal":
            return rest + _normal_terms(distribution, key, continuation)
        raise TypeError(f"address {site.name!r}: no measure-valued derivative for {name}")


def _scalar_term(parameter, difference):
    return jnp.sum((parameter - sg(parameter)) * sg(difference))


def _normal_terms(distribution, key, continuation):
    """d/dmu: (E f(mu + s W) - E f(mu - s W)) / (s sqrt(2 pi)), W Weibull(2, sqrt 2);
    d/dsigma: (E f(mu + s M) - E f(mu + s Z)) / s, M double-sided Maxwell, Z normal."""
    loc, scale = distribution.loc, distribution.scale
    k1, k2, k3, k4 = jax.random.split(key, 4)
    weibull = jnp.sqrt(-2.0 * jnp.log(jax.random.uniform(k1, jnp.shape(loc), minval=1e-12)))
    maxwell = jnp.linalg.norm(jax.random.normal(k2, jnp.shape(loc) + (3,)), axis=-1)
    maxwell = maxwell * jnp.where(jax.random.bernoulli(k3, 0.5, jnp.shape(loc)), 1.0, -1.0)
    normal = jax.random.normal(k4, jnp.shape(loc))
    c_loc = 1.0 / (scale * jnp.sqrt(2.0 * jnp.pi))
    d_loc = c_loc * (continuation(sg(loc + scale * weibull)) - continuation(sg(loc - scale * weibull)))
    d_scale = (continuation(sg(loc + scale * maxwell)) - continuation(sg(loc + scale * normal))) / scale
    return _scalar_term(loc, d_loc) + _scalar_term(scale, d_scale)


def choose_strategy(strategies, site):
    """By address, then by distribution type, then the default."""
    for key in (site.address, format_address(site.address)):
        if key in strategies:
            return strategies[key]
    node_type = site.spec.node_type
    for kind, strategy in strategies.items():
        if isinstance(kind, type) and node_type is not None and issubclass(node_type, kind):
            return strategy
    return _default(site)


def _default(site):
    template = _template(site)
    if template.has_rsample:
        return Reparam()
    if template.has_enumerate_support and template.event_shape == () and _support_size(template) <= 64:
        return Enumerate()
    return Reinforce()


def _support_size(template):
    try:
        return int(template.enumerate_support(expand=False).size)
    except Exception:  # a support that depends on traced parameters
        return 10**9
