"""The random-choice primitive ``sample_p``, and ``Site``: one choice as a
transformation sees it.

Every random choice a generative function makes is bound as ``sample_p``
with its key, whether it is *active*, the leaves of its distribution, its
full address, the distribution's spec, its vmap levels and its placement
among the combinators. A choice is inactive in the branches of a
``ppl.switch`` that were not taken: under ``jax.vmap`` a switch becomes a
select that runs every branch, and ``active`` tells an interpreter which
branch's choices count. Run directly, it lowers to the distribution's own
sampler, so models compile to the same XLA as hand-written JAX. Staged
(``jax.make_jaxpr``), it is the one place a transformation must look at to
find a random choice, and ``Site.from_equation`` is the one place that reads
the equation: a new parameter of ``sample_p`` is a new field of ``Site``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl._jax import Primitive, ad, batching, mlir
from ppl.combinator_context import active_flag, placement
from ppl.distribution_spec import flatten_distribution, log_density_of
from ppl.errors import format_address
from ppl.joint_sampler import static_result
from ppl.levels import Level, active_function, level_shape, log_prob_function, over_levels, sample_function

__all__ = ["sample_p", "bind_sample", "Site"]

sample_p = Primitive("ppl_sample")


def _impl(key, active, *leaves, spec, levels, **params):
    return sample_function(spec, levels)(key, active, *leaves)


def _abstract_eval(key, active, *leaves, spec, levels, **params):
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (key, active, *leaves)]
    try:
        out = jax.eval_shape(sample_function(spec, levels), *shapes)
    except NotImplementedError:  # no sampler (an improper prior, staged): the shape of its values
        element = static_result(lambda *ls: tuple(spec.rebuild(ls).shape()), spec.example_leaves)
        shape = level_shape(levels) + element
        out = jax.ShapeDtypeStruct(shape, jnp.result_type(float))
    return jax.core.ShapedArray(out.shape, out.dtype)


def _batch(args, dims, *, levels, placement, **params):
    key_dim, leaf_dims = dims[0], dims[1:]
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    # Levels fill innermost first; the first `vmap_depth` are ppl's Vmap combinators.
    joint = key_dim is None and len(levels) < placement.vmap_depth
    level = Level(key_dim, tuple(leaf_dims), size, joint)
    return sample_p.bind(*args, levels=levels + (level,), placement=placement, **params), 0


def _jvp(primals, tangents, **params):
    key, active, leaves = primals[0], primals[1], primals[2:]
    value = sample_p.bind(*primals, **params)
    if not leaves:
        return value, ad.Zero.from_primal_value(value)
    leaf_tangents = [ad.instantiate_zeros(t) for t in tangents[2:]]
    sample = sample_function(params["spec"], params["levels"])
    _, tangent = jax.jvp(lambda *ls: sample(key, active, *ls), tuple(leaves), tuple(leaf_tangents))
    return value, tangent


sample_p.def_impl(_impl)
sample_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[sample_p] = _batch
ad.primitive_jvps[sample_p] = _jvp
mlir.register_lowering(sample_p, mlir.lower_fun(_impl, multiple_results=False))


def bind_sample(key, distribution, address, active=True):
    """Draw from ``distribution`` with ``key`` as the choice at ``address`` (a tuple).

    >>> bind_sample(jax.random.key(0), dist.Normal(0.0, 1.0).expand([2]), ("x",)).shape
    (2,)
    """
    leaves, spec = flatten_distribution(distribution)
    active = jnp.logical_and(active_flag(), active)
    return sample_p.bind(key, active, *leaves, address=tuple(address), spec=spec, levels=(), placement=placement())


class Site(NamedTuple):
    """One random choice of a staged program: the parameters of its
    ``sample_p`` equation and the values of its operands.

    >>> program = ppl.transforms.stage(ppl.gen(lambda: ppl.sample("x", dist.Normal(0.0, 1.0))), ())
    >>> eqn = ppl.transforms.sample_sites(program.jaxpr.jaxpr)[0]
    >>> site = Site.from_equation(eqn, [jax.random.key(0), True, 1.0, 1.0])  # loc 1, scale 1
    >>> site.name, float(site.log_prob(1.0))
    ('x', -0.918...)
    """

    address: tuple
    spec: Any  # DistributionSpec
    levels: tuple  # Level per vmap around the choice, outermost last
    placement: Any  # Placement
    key: Any
    active: Any
    leaves: list

    @classmethod
    def from_equation(cls, eqn, invals):
        """The site of a ``sample_p`` equation, given its input values."""
        key, active, *leaves = invals
        return cls(key=key, active=active, leaves=leaves, **eqn.params)

    @property
    def name(self):
        return format_address(self.address)

    def draw(self, key=None):
        """A draw of the choice (from ``key`` instead of its own, if given)."""
        return sample_function(self.spec, self.levels)(self.key if key is None else key, self.active, *self.leaves)

    def log_prob(self, value):
        """The log density of ``value``, summed over the active elements."""
        return log_prob_function(self.spec, self.levels)(value, self.active, *self.leaves)

    def element_active(self, value):
        """One active flag per element of the vmap levels (leading axes of ``value``)."""
        return active_function(self.levels)(value, self.active)

    def element_log_probs(self, value):
        """Log density of each independent element of ``value`` (scalar events only)."""
        one = lambda v, active, *leaves: jnp.where(active, log_density_of(self.spec.rebuild(leaves), v), 0.0)
        return over_levels(one, self.levels)(value, self.active, *self.leaves)

    def per_element(self, fn):
        """``fn(distribution, active)`` for each element of the vmap levels,
        stacked with the levels' axes leading, as the value's are."""
        one = lambda active, *leaves: fn(self.spec.rebuild(leaves), active)
        for level in self.levels:
            one = jax.vmap(one, in_axes=level.leaf_axes, axis_size=level.axis_size)
        return one(self.active, *self.leaves)
