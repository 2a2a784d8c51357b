"""A choice's vmap *levels*: its sampler, log density and active flags,
vectorised by the vmaps around it.

Under ``jax.vmap``, ``sample_p`` is re-bound with one more ``Level``
``(key_axis, leaf_axes, axis_size)``; its value then carries one leading axis
per level (outermost first), exactly like a vectorised choice in a trace.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.distribution_spec import log_density_of
from ppl.joint_sampler import joint_sampler

__all__ = ["Level", "over_levels", "level_shape", "sample_function", "log_prob_function", "active_function"]


class Level(NamedTuple):
    """One ``vmap`` around a choice. ``joint`` levels come from ppl's ``Vmap``
    combinator, which passes every element the same key: the elements are
    then drawn jointly (independently, from that one key), as a hand-written
    vectorised sampler would, instead of deriving a key per element.

    >>> Level(key_axis=0, leaf_axes=(0, None), axis_size=3).joint
    False
    """

    key_axis: Any
    leaf_axes: tuple
    axis_size: int
    joint: bool = False


def over_levels(fn, levels):
    """``fn(value, active, *leaves)`` of one element, mapped over the levels
    (the value's leading axes, the leaves' axes as each level batches them).

    >>> over_levels(lambda v, active, *leaves: v * 2.0, (Level(None, (None, None, None), 3),))(jnp.ones(3), True, 0.0, 1.0)
    Array([2., 2., 2.], dtype=float32)
    """
    for level in levels:
        fn = jax.vmap(fn, in_axes=(0, *level.leaf_axes), axis_size=level.axis_size)
    return fn


def level_shape(levels):
    """The leading axes the levels give a choice's value (outermost first).

    >>> level_shape((Level(None, (None,), 3), Level(None, (None,), 2)))
    (2, 3)
    """
    return tuple(level.axis_size for level in reversed(levels))


def sample_function(spec, levels):
    """``(key, active, *leaves) -> value`` for a (possibly vectorised) choice.

    >>> from ppl.distribution_spec import flatten_distribution
    >>> leaves, spec = flatten_distribution(dist.Normal(0.0, 1.0))
    >>> level = Level(0, (None, None, None), 4)  # four keys, shared parameters
    >>> sample_function(spec, (level,))(jax.random.split(jax.random.key(0), 4), True, *leaves).shape
    (4,)
    """
    fn = lambda key, active, *leaves: spec.rebuild(leaves).sample(key)
    for depth, level in enumerate(levels):
        batched = joint_sampler(spec, level) if level.joint and depth == 0 else None
        if batched is not None:
            fn = batched
        elif level.joint:  # one key per element, split from the shared key
            fn = _split_keys(fn, level)
        else:
            fn = jax.vmap(fn, in_axes=(level.key_axis, *level.leaf_axes), axis_size=level.axis_size)
    return fn


def _split_keys(fn, level):
    mapped = jax.vmap(fn, in_axes=(0, *level.leaf_axes), axis_size=level.axis_size)
    return lambda key, *rest: mapped(jax.random.split(key, level.axis_size), *rest)


def log_prob_function(spec, levels):
    """``(value, active, *leaves) -> log density`` of the active elements, summed.

    >>> from ppl.distribution_spec import flatten_distribution
    >>> leaves, spec = flatten_distribution(dist.Normal(0.0, 1.0))
    >>> float(log_prob_function(spec, ())(0.0, False, *leaves))  # inactive: counts nothing
    0.0
    """

    def one(value, active, *leaves):
        return jnp.where(active, jnp.sum(log_density_of(spec.rebuild(leaves), value)), 0.0)

    return lambda value, *rest: jnp.sum(over_levels(one, levels)(value, *rest))


def active_function(levels):
    """``(value, active) -> active`` broadcast to one flag per element of the levels.

    >>> active_function((Level(None, (None,), 3),))(jnp.zeros(3), True).shape
    (3,)
    """
    levels = [l._replace(leaf_axes=l.leaf_axes[:1]) for l in levels]
    return over_levels(lambda value, active: jnp.asarray(active, bool), levels)
