"""The joint sampler of a vectorised choice: all elements from one key.

ppl's ``Vmap`` combinator passes every element the same key. Where the
distribution's constructor rebuilds it exactly from its ``arg_constraints``
(Normal, Bernoulli, Gamma, Categorical, ...), the elements are drawn at once
from one batched distribution, as a hand-written vectorised sampler would, so
a ppl model compiles to the same XLA as hand-written JAX.
"""

import jax
import jax.numpy as jnp

__all__ = ["joint_sampler", "static_result"]


def joint_sampler(spec, level):
    """``(key, active, *leaves) -> value`` drawing the ``level.axis_size``
    elements of one vmap level at once from ``key``, or None where the
    distribution cannot be batched exactly this way.

    >>> from ppl.distribution_spec import flatten_distribution
    >>> from ppl.levels import Level
    >>> leaves, spec = flatten_distribution(dist.Normal(0.0, 1.0))
    >>> sample = joint_sampler(spec, Level(None, (None, 0, None), 3, joint=True))
    >>> sample(jax.random.key(0), True, jnp.zeros(3), jnp.asarray(1.0)).shape
    (3,)
    """
    leaf_axes, size = level.leaf_axes[1:], level.axis_size

    def parameters(*leaves):
        distribution = spec.rebuild(leaves)
        return {name: getattr(distribution, name) for name in distribution.arg_constraints}

    def batched(leaves):
        params = jax.vmap(parameters, in_axes=leaf_axes, axis_size=size)(*leaves)
        # Keep the per-element parameters right-aligned against each other.
        rank = max(jnp.ndim(p) for p in params.values()) - 1
        pad = lambda p: p.reshape((size,) + (1,) * (rank + 1 - jnp.ndim(p)) + p.shape[1:])
        return spec.node_type(**{k: pad(p) for k, p in params.items()}, validate_args=False)

    def sample(key, active, *leaves):
        return batched(leaves).sample(key)

    if not _rebuilds_exactly(spec):
        return None
    return sample if _batch_shape_ok(spec, batched, level) else None


def _batch_shape_ok(spec, batched, level):
    """The batched distribution must be exactly ``axis_size`` copies of the element's."""
    shapes = []

    def probe(*leaves):
        one = spec.rebuild(leaves)
        shapes.append((tuple(one.batch_shape), tuple(one.event_shape)))
        return jnp.zeros(())

    jax.eval_shape(probe, *spec.example_leaves)
    batched_leaves = [
        jax.ShapeDtypeStruct(_with_axis(leaf.shape, axis, level.axis_size), leaf.dtype)
        for leaf, axis in zip(spec.example_leaves, level.leaf_axes[1:])
    ]

    def probe_batched(*leaves):
        many = batched(leaves)
        shapes.append((tuple(many.batch_shape), tuple(many.event_shape)))
        return jnp.zeros(())

    try:
        jax.eval_shape(probe_batched, *batched_leaves)
    except Exception:  # parameters that do not broadcast this way
        return False
    (batch, event), (many_batch, many_event) = shapes
    return many_batch == (level.axis_size,) + batch and many_event == event


def _with_axis(shape, axis, size):
    return tuple(shape) if axis is None else tuple(shape[:axis]) + (size,) + tuple(shape[axis:])


def _rebuilds_exactly(spec):
    if spec.exact is None:
        try:
            def check(*ls):
                original = spec.rebuild(ls)
                names = list(original.arg_constraints)
                params = {n: getattr(original, n) for n in names}
                copy = type(original)(**params, validate_args=original._validate_args)
                return bool(names) and jax.tree.structure(copy) == jax.tree.structure(original)
            spec.exact = static_result(check, spec.example_leaves)
        except Exception:  # a constructor that cannot take its own attributes
            spec.exact = False
    return spec.exact


def static_result(fn, shapes):
    out = {}
    jax.eval_shape(lambda *ls: out.setdefault("value", fn(*ls)) and None, *shapes)
    return out["value"]
