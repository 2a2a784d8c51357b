"""Gradient strategies for random choices, one small rule each.

A strategy turns a random choice and its continuation (``value -> surrogate
of the rest of the program``) into a surrogate scalar: its value is an
unbiased estimate of the expectation, its gradient an unbiased estimate of
the expectation's gradient with respect to the distribution's parameters.
Strategies that need no continuation (``Reparam``, ``Reinforce``) also have
``in_block``: the rule used inside ``scan`` bodies (``transforms/adev_control.py``).
A choice comes to a strategy as a ``Site`` (``ppl/sample_primitive.py``).
"""

import contextlib

import jax
import jax.numpy as jnp
from jax import lax

from numpyro.distributions import (
    BernoulliLogits,
    BernoulliProbs,
    CategoricalLogits,
    CategoricalProbs,
    ExpandedDistribution,
    Normal,
    Poisson,
)

from ppl.errors import ControlFlowError, format_address

__all__ = ["Reparam", "Reinforce", "Enumerate", "MeasureValued", "choose_strategy", "fold_key", "observing_choices"]

sg = lax.stop_gradient


def fold_key(key, data):
    """``jax.random.fold_in`` of every key in ``key`` (a vmapped site's key is
    an array of keys).

    >>> fold_key(jax.random.split(jax.random.key(0), 3), 1).shape
    (3,)
    """
    fold = lambda k: jax.random.fold_in(k, data)
    for _ in range(jnp.ndim(key)):
        fold = jax.vmap(fold)
    return fold(key)


class Reparam:
    """Pathwise derivative: differentiate through the sampler (NumPyro's
    ``rsample``, implicit reparameterisation for Gamma, Beta, Dirichlet)."""

    def __repr__(self):
        return "Reparam()"

    def surrogate(self, site, continuation):
        return continuation(self.in_block(site, None))

    def in_block(self, site, block):
        prototype = _template(site)
        if not prototype.has_rsample:
            raise TypeError(f"address {site.name!r}: {type(prototype).__name__} has no reparameterised sampler")
        return site.draw()


class Reinforce:
    """Score-function estimator. ``baseline``: ``None``; a number;
    ``"sampled"`` (the default): the continuation's value at an independent
    draw; or ``"leave-one-out"``: ``num_samples`` draws, each with the mean
    continuation of the others as its baseline, averaged. Each baseline is
    independent of the draw it is subtracted from, so the estimator stays
    unbiased.

    >>> Reinforce(baseline="leave-one-out", num_samples=4).num_samples
    4
    """

    def __init__(self, baseline="sampled", num_samples=4):
        if isinstance(baseline, str) and baseline not in ("sampled", "leave-one-out"):
            raise ValueError(f'Reinforce baseline must be None, a number, "sampled" or "leave-one-out", got {baseline!r}')
        self.baseline, self.num_samples = baseline, num_samples
        if self._is("leave-one-out") and num_samples < 2:
            raise ValueError(f"a leave-one-out baseline needs num_samples >= 2, got {num_samples}")

    def _is(self, name):
        return isinstance(self.baseline, str) and self.baseline == name

    def __repr__(self):
        count = f", num_samples={self.num_samples}" if self._is("leave-one-out") else ""
        return f"Reinforce(baseline={self.baseline!r}{count})"

    def surrogate(self, site, continuation):
        if self._is("leave-one-out"):
            return self._leave_one_out(site, continuation)
        value = sg(site.draw())
        rest = continuation(value)
        log_density = site.log_prob(value)
        baseline = self._baseline(site, continuation)
        return rest + (sg(rest) - baseline) * (log_density - sg(log_density))

    def _baseline(self, site, continuation):
        if self.baseline is None:
            return 0.0
        if self._is("sampled"):
            other = sg(site.draw(fold_key(site.key, 1)))
            return sg(continuation(other, plain=True))
        return self.baseline

    def _leave_one_out(self, site, continuation):
        """Mean over m of rest_m + (sg rest_m - mean of the other rests) * score_m:
        the continuations run under one vmap, so the program does not grow with m."""
        count = self.num_samples
        keys = [site.key] + [fold_key(site.key, 3 + m) for m in range(1, count)]
        values = jnp.stack([sg(site.draw(k)) for k in keys])
        rests = jax.vmap(continuation)(values)
        log_densities = jax.vmap(site.log_prob)(values)
        others = (jnp.sum(sg(rests)) - sg(rests)) / (count - 1)
        return jnp.mean(rests + (sg(rests) - others) * (log_densities - sg(log_densities)))

    def in_block(self, site, block):
        """Inside a scan: draw, and leave the log density to the block, whose
        learning signal is the value of the whole rest of the program."""
        if self._is("leave-one-out"):
            raise ControlFlowError(
                f"address {site.name!r}: a leave-one-out baseline needs the rest of the program at each choice, "
                'which ADEV cannot run from inside `scan`; use Reinforce() (a sampled baseline) there'
            )
        value = sg(site.draw())
        block.add_score(site.log_prob(value), self.baseline)
        return value


class Enumerate:
    """Exact sum over a finite support. For a vectorised choice (independent
    elements), each element is enumerated with the others held at their
    sampled values: n x K continuations, run under ``vmap``, never K^n."""

    def __repr__(self):
        return "Enumerate()"

    @staticmethod
    def branches(site):
        """How many continuations the exact sum runs (1 for a vectorised choice,
        whose elements are enumerated one at a time, plainly)."""
        prototype = _template(site)
        return _support_size(prototype) if not site.levels and prototype.batch_shape == () else 1

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
    prototype = _template(site)
    if not prototype.has_enumerate_support or prototype.event_shape != ():
        raise TypeError(f"address {site.name!r}: {type(prototype).__name__} has no finite support to enumerate")
    return prototype.enumerate_support(expand=False).reshape(-1)


def _template(site):
    """One element's distribution (parameters zero under vmaps: shapes only)."""
    if not site.levels:
        return site.spec.rebuild(site.leaves)
    return site.spec.rebuild([jnp.zeros(s.shape, s.dtype) for s in site.spec.example_leaves])


def _local_terms(site, value, support, continuation):
    """sum over elements e and values k of (p_ek - sg p_ek) * sg(F(v with v_e = k))."""
    flat = value.reshape(-1)

    def replaced(e, k):
        return continuation(flat.at[e].set(k.astype(flat.dtype)).reshape(value.shape), plain=True)

    elements = jnp.arange(flat.size)
    outs = jax.vmap(lambda k: jax.vmap(lambda e: replaced(e, k))(elements))(support)  # (K, E)
    probs = jnp.stack([jnp.exp(site.element_log_probs(jnp.full(value.shape, k, value.dtype))).reshape(-1) for k in support])
    return jnp.sum((probs - sg(probs)) * sg(outs))


class MeasureValued:
    """Measure-valued derivatives (weak derivatives): the gradient of each
    parameter is a difference of the continuation under two coupled
    distributions. Bernoulli, Categorical, Poisson and Normal. Each element
    of an array-valued or vectorised choice is its own choice: it is replaced
    with the other elements held at their sampled values (n continuations
    under ``vmap``, so the program does not grow with n)."""

    def __repr__(self):
        return "MeasureValued()"

    def surrogate(self, site, continuation):
        prototype = _template(site)
        rule = next((r for kind, r in _MEASURE_VALUED_RULES if isinstance(_base(prototype), kind)), None)
        if rule is None or prototype.event_shape != ():
            raise TypeError(f"address {site.name!r}: no measure-valued derivative for {type(prototype).__name__}")
        value = sg(site.draw())
        rest = continuation(value)
        replaced = lambda new: _replaced(continuation, value, new)
        active = _per_element(site, lambda d, active: active)
        total = 0.0
        for parameter, difference in rule(site, value.reshape(-1), rest, replaced):
            mask = active.reshape(active.shape + (1,) * (parameter.ndim - 1))
            total = total + jnp.sum(jnp.where(mask, (parameter - sg(parameter)) * sg(difference), 0.0))
        return rest + total


def _per_element(site, fn, trailing=()):
    """``fn(distribution, active)`` for each scalar element, flat: shape (E, *trailing)."""
    out = site.per_element(lambda d, active: jnp.broadcast_to(fn(_base(d), active), d.batch_shape + trailing))
    return out.reshape((-1,) + trailing)


def _base(distribution):
    """The distribution under ``.expand(...)``, whose parameters broadcast to the batch shape."""
    while isinstance(distribution, ExpandedDistribution):
        distribution = distribution.base_dist
    return distribution


def _replaced(continuation, value, new):
    """``F(v with element e set to new[e])`` for every element e, under one vmap."""
    flat = value.reshape(-1)
    one = lambda e, v: continuation(flat.at[e].set(v.astype(flat.dtype)).reshape(value.shape), plain=True)
    return jax.vmap(one)(jnp.arange(flat.size), new)


def _bernoulli(site, flat, rest, replaced):
    """d/dp E f = f(1) - f(0); one of the two is the sampled run."""
    flipped = replaced(1 - flat)
    return [(_per_element(site, lambda d, _: d.probs), (2 * flat - 1) * (rest - flipped))]


def _categorical(site, flat, rest, replaced):
    """d/dp_k E f = f(k): every value of each element."""
    size = _base(_template(site)).probs.shape[-1]
    probs = _per_element(site, lambda d, _: d.probs, (size,))
    outs = jax.vmap(lambda k: replaced(jnp.full(flat.shape, k, flat.dtype)))(jnp.arange(size))  # (K, E)
    return [(probs, outs.T)]


def _poisson(site, flat, rest, replaced):
    """d/d rate E f(N) = E[f(N + 1) - f(N)]."""
    return [(_per_element(site, lambda d, _: d.rate), replaced(flat + 1) - rest)]


def _normal(site, flat, rest, replaced):
    """d/dmu: (f(mu + s W) - f(mu - s W)) / (s sqrt(2 pi)), W ~ Weibull(2, sqrt 2);
    d/dsigma: (f(mu + s M) - f(x)) / s, M double-sided Maxwell, x the sampled value."""
    loc = _per_element(site, lambda d, _: d.loc)
    scale = _per_element(site, lambda d, _: d.scale)
    key = fold_key(site.key, 2)
    k1, k2, k3 = jax.random.split(jnp.reshape(key, (-1,))[0], 3)
    weibull = jnp.sqrt(-2.0 * jnp.log(jax.random.uniform(k1, flat.shape, minval=1e-12)))
    maxwell = jnp.linalg.norm(jax.random.normal(k2, flat.shape + (3,)), axis=-1)
    maxwell = maxwell * jnp.where(jax.random.bernoulli(k3, 0.5, flat.shape), 1.0, -1.0)
    at = lambda x: replaced(sg(x))
    d_loc = (at(loc + scale * weibull) - at(loc - scale * weibull)) / (scale * jnp.sqrt(2.0 * jnp.pi))
    d_scale = (at(loc + scale * maxwell) - rest) / scale
    return [(loc, d_loc), (scale, d_scale)]


_MEASURE_VALUED_RULES = (
    ((BernoulliProbs, BernoulliLogits), _bernoulli),
    ((CategoricalProbs, CategoricalLogits), _categorical),
    (Poisson, _poisson),
    (Normal, _normal),
)


_OBSERVERS = []  # callbacks (site, in_scan): who asks for a strategy, for what choice


@contextlib.contextmanager
def observing_choices(callback):
    """Call ``callback(site, in_scan)`` for every choice ADEV picks a strategy
    for while the block runs (at trace time): how ``choose_strategies`` finds
    a program's choices."""
    _OBSERVERS.append(callback)
    try:
        yield
    finally:
        _OBSERVERS.remove(callback)


def choose_strategy(strategies, site, in_scan=False, enumeration_budget=None):
    """By address, then by distribution type, then the default: inside a
    scan body (no continuation there) Reparam or Reinforce.
    ``enumeration_budget``: how many more exact branches the default may
    multiply the program's runs by (scalar enumerations nest: K^n)."""
    for observe in _OBSERVERS:
        observe(site, in_scan)
    for key in (site.address, format_address(site.address)):
        if key in strategies:
            return strategies[key]
    node_type = site.spec.node_type
    for kind, strategy in strategies.items():
        if isinstance(kind, type) and node_type is not None and issubclass(node_type, kind):
            return strategy
    if in_scan:
        return Reparam() if _template(site).has_rsample else Reinforce()
    return _default(site, enumeration_budget)


def _default(site, enumeration_budget=None):
    prototype = _template(site)
    if prototype.has_rsample:
        return Reparam()
    if prototype.has_enumerate_support and prototype.event_shape == () and _support_size(prototype) <= 64:
        if enumeration_budget is None or Enumerate.branches(site) <= enumeration_budget:
            return Enumerate()
    return Reinforce()


def _support_size(prototype):
    try:
        return int(prototype.enumerate_support(expand=False).size)
    except Exception:  # a support that depends on traced parameters
        return 10**9
