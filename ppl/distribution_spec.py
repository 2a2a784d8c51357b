"""A distribution as a random choice carries it: array leaves plus a static spec.

``sample_p`` cannot take a NumPyro distribution as an operand, so a choice's
distribution is flattened into its array *leaves* (traced) and a
``DistributionSpec`` (static: the pytree structure, hashable) that rebuilds
it. ``log_density_of`` is the density every ppl transformation uses.
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from numpyro.distributions import BernoulliLogits, BinomialLogits, ExpandedDistribution, Independent

__all__ = ["DistributionSpec", "flatten_distribution", "log_density_of", "without_validation"]


class DistributionSpec:
    """The static part of a distribution: its pytree structure (hashable by repr,
    since NumPyro puts dicts in its aux data).

    >>> leaves, spec = flatten_distribution(dist.Normal(0.0, 2.0))
    >>> spec.node_type.__name__, float(spec.rebuild(leaves).scale)
    ('Normal', 2.0)
    """

    __slots__ = ("treedef", "_key", "node_type", "example_leaves", "exact")

    def __init__(self, treedef, node_type=None, example_leaves=()):
        self.treedef = treedef
        self._key = repr(treedef)
        self.node_type = node_type
        self.example_leaves = [jax.ShapeDtypeStruct(np.shape(l), jnp.result_type(l)) for l in example_leaves]
        self.exact = None  # whether the constructor rebuilds it exactly; found on first use

    def rebuild(self, leaves):
        return jax.tree.unflatten(self.treedef, leaves)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, DistributionSpec) and self._key == other._key

    def __repr__(self):
        return self._key


def flatten_distribution(distribution):
    """``(leaves, spec)``; a distribution that is not a pytree is closed over
    (no leaves).

    >>> leaves, spec = flatten_distribution(dist.Normal(0.0, 1.0).expand([3]))
    >>> [leaf.shape for leaf in leaves]
    [(), ()]
    """
    leaves, treedef = jax.tree.flatten(distribution)
    if len(leaves) == 1 and leaves[0] is distribution:  # not a pytree: close over it
        return [], DistributionSpec(treedef)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    return leaves, DistributionSpec(treedef, type(distribution), leaves)


def log_density_of(distribution, value, validate=True):
    """NumPyro's ``log_prob``, except for Bernoulli and Binomial with logits,
    whose NumPyro formula has a wrong derivative at logits == 0 exactly (1 and
    0 instead of 1/2): zero-initialised logits are common in inference.

    ``validate=False``: no per-element support mask (``-inf`` outside the
    support), for values known to lie in it or masked by the caller once:
    the mask is a select that keeps XLA from fusing the density into its sum.

    >>> float(jax.grad(lambda l: log_density_of(dist.Bernoulli(logits=l), 1.0))(0.0))
    0.5
    """
    if isinstance(distribution, (BernoulliLogits, BinomialLogits)):
        logits = distribution.logits
        count = getattr(distribution, "total_count", 1)
        log_p = value * logits - count * jax.nn.softplus(logits)  # = v log s(l) + (n - v) log s(-l), one softplus
        if isinstance(distribution, BinomialLogits):  # the binomial coefficient (1 for a Bernoulli)
            log_p = log_p + gammaln(count + 1.0) - gammaln(value + 1.0) - gammaln(count - value + 1.0)
        return jnp.where(distribution.support.check(value), log_p, -jnp.inf) if validate else log_p
    if isinstance(distribution, Independent):  # reach a Bernoulli/Binomial inside .to_event(n)
        log_p = log_density_of(distribution.base_dist, value, validate)
        return jnp.sum(log_p, axis=tuple(range(-distribution.reinterpreted_batch_ndims, 0)))
    if isinstance(distribution, ExpandedDistribution):  # ... or inside .expand(shape)
        batch = jnp.shape(value)[: max(jnp.ndim(value) - distribution.event_dim, 0)]
        log_p = log_density_of(distribution.base_dist, value, validate)
        return jnp.broadcast_to(log_p, jnp.broadcast_shapes(distribution.batch_shape, batch))
    return (distribution if validate else without_validation(distribution)).log_prob(value)


def without_validation(distribution):
    """A shallow copy of ``distribution`` (and of the distributions it wraps)
    whose ``log_prob`` does not mask values outside the support.

    >>> float(without_validation(dist.Exponential(1.0)).log_prob(-1.0))  # NumPyro's own log_prob: -inf
    1.0
    """
    if not getattr(distribution, "_validate_args", False) and not hasattr(distribution, "base_dist"):
        return distribution
    copied = copy.copy(distribution)
    copied._validate_args = False
    if hasattr(copied, "base_dist"):
        copied.base_dist = without_validation(copied.base_dist)
    return copied
