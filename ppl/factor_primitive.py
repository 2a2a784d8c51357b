"""The log-density primitive ``factor_p`` (``ppl.factor``), and ``FactorSite``.

Its value is its input; it exists so a staged program shows where the
density is touched. Under ``jax.vmap`` it gains a level per vmap, as
``sample_p`` does.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl._jax import Primitive, ad, batching, mlir
from ppl.combinator_context import active_flag, placement
from ppl.levels import Level, active_function

__all__ = ["factor_p", "bind_factor", "factor_function", "factor_total_function", "FactorSite"]

factor_p = Primitive("ppl_factor")


def factor_function(levels):
    """``(active, log_weight) -> log_weight`` with the levels' axes leading.

    >>> factor_function(())(True, jnp.ones(2)).shape
    (2,)
    """
    fn = lambda active, log_weight: log_weight
    for level in levels:
        fn = jax.vmap(fn, in_axes=level.leaf_axes, axis_size=level.axis_size)
    return fn


def factor_total_function(levels):
    """``(active, log_weight) -> total`` over the active elements.

    >>> float(factor_total_function(())(True, jnp.ones(2)))
    2.0
    """
    fn = lambda active, log_weight: jnp.where(active, jnp.sum(log_weight), 0.0)
    for level in levels:
        fn = jax.vmap(fn, in_axes=level.leaf_axes, axis_size=level.axis_size)
    return lambda active, log_weight: jnp.sum(fn(active, log_weight))


def _impl(active, log_weight, *, levels, **params):
    return factor_function(levels)(active, log_weight)


def _abstract_eval(active, log_weight, *, levels, **params):
    shape = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (active, log_weight)]
    out = jax.eval_shape(factor_function(levels), *shape)
    return jax.core.ShapedArray(out.shape, out.dtype)


def _batch(args, dims, *, levels, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    level = Level(None, tuple(dims), size)
    return factor_p.bind(*args, levels=levels + (level,), **params), 0


def _jvp(primals, tangents, **params):
    out = factor_p.bind(*primals, **params)
    tangent = ad.instantiate_zeros(tangents[1])
    return out, factor_function(params["levels"])(primals[0], tangent)


factor_p.def_impl(_impl)
factor_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[factor_p] = _batch
ad.primitive_jvps[factor_p] = _jvp
mlir.register_lowering(factor_p, mlir.lower_fun(_impl, multiple_results=False))


def bind_factor(log_weight, address):
    """Mark ``log_weight`` as the factor at ``address`` (a tuple). An integer
    weight becomes JAX's default float (float64 under ``jax_enable_x64``).

    >>> bind_factor(2, ("f",)).dtype
    dtype('float32')
    """
    log_weight = jnp.asarray(log_weight)
    if not jnp.issubdtype(log_weight.dtype, jnp.floating):
        log_weight = log_weight.astype(jnp.result_type(float))
    return factor_p.bind(active_flag() & jnp.bool_(True), log_weight, address=tuple(address), levels=(), placement=placement())


class FactorSite(NamedTuple):
    """One ``factor_p`` equation of a staged program, with its input values."""

    address: tuple
    levels: tuple
    placement: Any
    active: Any
    log_weight: Any

    @classmethod
    def from_equation(cls, eqn, invals):
        """The factor of a ``factor_p`` equation, given its input values."""
        active, log_weight = invals
        return cls(active=active, log_weight=log_weight, **eqn.params)

    def value(self):
        """The log weight, the levels' axes leading."""
        return factor_function(self.levels)(self.active, self.log_weight)

    def total(self):
        """The log weight summed over the active elements."""
        return factor_total_function(self.levels)(self.active, self.log_weight)

    def element_active(self, value):
        """One active flag per element of the vmap levels."""
        return active_function(self.levels)(value, self.active)
