"""The random-choice primitive: ``sample_p``.

Every random choice a generative function makes is bound as ``sample_p`` with
its key, the leaves of its distribution, its full address and the
distribution's tree structure. Run directly, it lowers to the distribution's
own sampler, so models compile to the same XLA as hand-written JAX. Staged
(``jax.make_jaxpr``), it is the one place a transformation must look at to find
a random choice and the distribution it comes from.

Under ``jax.vmap`` the primitive is re-bound with one more *level*
``(key_axis, leaf_axes, axis_size)``; its value then carries one leading axis
per level (outermost first), exactly like a vectorised choice in a trace.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl._jax import Primitive, ad, batching, mlir

__all__ = ["sample_p", "DistributionSpec", "bind_sample", "sample_function", "log_prob_function"]


class DistributionSpec:
    """The static part of a distribution: its pytree structure (hashable by repr,
    since NumPyro puts dicts in its aux data)."""

    __slots__ = ("treedef", "_key")

    def __init__(self, treedef):
        self.treedef = treedef
        self._key = repr(treedef)

    def rebuild(self, leaves):
        return jax.tree.unflatten(self.treedef, leaves)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, DistributionSpec) and self._key == other._key

    def __repr__(self):
        return self._key


class Level(NamedTuple):
    key_axis: Any
    leaf_axes: tuple
    axis_size: int


def flatten_distribution(distribution):
    leaves, treedef = jax.tree.flatten(distribution)
    if len(leaves) == 1 and leaves[0] is distribution:  # not a pytree: close over it
        return [], DistributionSpec(treedef)
    return [jnp.asarray(leaf) for leaf in leaves], DistributionSpec(treedef)


def _vectorise(fn, levels, value_first):
    for level in levels:
        first = 0 if value_first else level.key_axis
        fn = jax.vmap(fn, in_axes=(first, *level.leaf_axes), axis_size=level.axis_size)
    return fn


def sample_function(spec, levels):
    """``(key, *leaves) -> value`` for a (possibly vectorised) choice."""
    return _vectorise(lambda key, *leaves: spec.rebuild(leaves).sample(key), levels, False)


def log_prob_function(spec, levels):
    """``(value, *leaves) -> log density`` summed over every axis."""

    def one(value, *leaves):
        return jnp.sum(spec.rebuild(leaves).log_prob(value))

    return lambda value, *leaves: jnp.sum(_vectorise(one, levels, True)(value, *leaves))


sample_p = Primitive("ppl_sample")


def _impl(key, *leaves, address, spec, levels):
    return sample_function(spec, levels)(key, *leaves)


def _abstract_eval(key, *leaves, address, spec, levels):
    out = jax.eval_shape(
        sample_function(spec, levels),
        jax.ShapeDtypeStruct(key.shape, key.dtype),
        *[jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
    )
    return jax.core.ShapedArray(out.shape, out.dtype)


def _batch(args, dims, *, address, spec, levels):
    key_dim, leaf_dims = dims[0], dims[1:]
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    axis = lambda d: d
    level = Level(axis(key_dim), tuple(axis(d) for d in leaf_dims), size)
    out = sample_p.bind(*args, address=address, spec=spec, levels=levels + (level,))
    return out, 0


def _jvp(primals, tangents, *, address, spec, levels):
    key, leaves = primals[0], primals[1:]
    value = sample_p.bind(*primals, address=address, spec=spec, levels=levels)
    leaf_tangents = [ad.instantiate_zeros(t) for t in tangents[1:]]
    if not leaves:
        return value, ad.Zero.from_primal_value(value)
    _, tangent = jax.jvp(lambda *ls: sample_function(spec, levels)(key, *ls), tuple(leaves), tuple(leaf_tangents))
    return value, tangent


sample_p.def_impl(_impl)
sample_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[sample_p] = _batch
ad.primitive_jvps[sample_p] = _jvp
mlir.register_lowering(sample_p, mlir.lower_fun(_impl, multiple_results=False))


def bind_sample(key, distribution, address):
    """Draw from ``distribution`` with ``key`` as the choice at ``address`` (a tuple)."""
    leaves, spec = flatten_distribution(distribution)
    return sample_p.bind(key, *leaves, address=tuple(address), spec=spec, levels=())
