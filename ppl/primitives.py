"""The random-choice primitive: ``sample_p``.

Every random choice a generative function makes is bound as ``sample_p`` with
its key, whether it is *active*, the leaves of its distribution, its full
address and the distribution's tree structure. A choice is inactive in the
branches of a ``ppl.switch`` that were not taken: under ``jax.vmap`` a switch
becomes a select that runs every branch, and ``active`` is what tells an
interpreter which branch's choices count. Run directly, it lowers to the distribution's
own sampler, so models compile to the same XLA as hand-written JAX. Staged
(``jax.make_jaxpr``), it is the one place a transformation must look at to find
a random choice and the distribution it comes from.

Under ``jax.vmap`` the primitive is re-bound with one more *level*
``(key_axis, leaf_axes, axis_size)``; its value then carries one leading axis
per level (outermost first), exactly like a vectorised choice in a trace.
"""

import contextlib
import contextvars
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from numpyro.distributions import BernoulliLogits, BinomialLogits, ExpandedDistribution, Independent

from ppl._jax import Primitive, ad, batching, mlir

__all__ = [
    "sample_p",
    "DistributionSpec",
    "bind_sample",
    "sample_function",
    "log_prob_function",
    "active_function",
    "log_density_of",
    "active_mask",
    "in_default_context",
    "staging_improper_priors",
    "improper_priors_staged",
    "vmap_level",
    "scan_level",
    "step_axis",
    "factor_p",
    "bind_factor",
    "factor_total_function",
]


class DistributionSpec:
    """The static part of a distribution: its pytree structure (hashable by repr,
    since NumPyro puts dicts in its aux data)."""

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


class Level(NamedTuple):
    """One ``vmap`` around a choice. ``joint`` levels come from ppl's ``Vmap``
    combinator, which passes every element the same key: the elements are
    then drawn jointly (independently, from that one key), as a hand-written
    vectorised sampler would, instead of deriving a key per element."""

    key_axis: Any
    leaf_axes: tuple
    axis_size: int
    joint: bool = False


def flatten_distribution(distribution):
    leaves, treedef = jax.tree.flatten(distribution)
    if len(leaves) == 1 and leaves[0] is distribution:  # not a pytree: close over it
        return [], DistributionSpec(treedef)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    return leaves, DistributionSpec(treedef, type(distribution), leaves)


def _vectorise(fn, levels, value_first):
    for level in levels:
        first = 0 if value_first else level.key_axis
        fn = jax.vmap(fn, in_axes=(first, *level.leaf_axes), axis_size=level.axis_size)
    return fn


def sample_function(spec, levels):
    """``(key, active, *leaves) -> value`` for a (possibly vectorised) choice."""
    fn = lambda key, active, *leaves: spec.rebuild(leaves).sample(key)
    for depth, level in enumerate(levels):
        batched = _batched_sampler(spec, level) if level.joint and depth == 0 else None
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


def _batched_sampler(spec, level):
    """Draw all elements of a level at once from one batched distribution,
    when the distribution is rebuilt exactly by its constructor from its
    ``arg_constraints`` (Normal, Bernoulli, Gamma, Categorical, ...)."""
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
            spec.exact = _static_result(check, spec.example_leaves)
        except Exception:  # a constructor that cannot take its own attributes
            spec.exact = False
    return spec.exact


def _static_result(fn, shapes):
    out = {}
    jax.eval_shape(lambda *ls: out.setdefault("value", fn(*ls)) and None, *shapes)
    return out["value"]


def log_density_of(distribution, value):
    """NumPyro's ``log_prob``, except for Bernoulli and Binomial with logits,
    whose NumPyro formula has a wrong derivative at logits == 0 exactly (1 and
    0 instead of 1/2): zero-initialised logits are common in inference."""
    if isinstance(distribution, (BernoulliLogits, BinomialLogits)):
        logits = distribution.logits
        count = getattr(distribution, "total_count", 1)
        log_p = value * logits - count * jax.nn.softplus(logits)  # = v log s(l) + (n - v) log s(-l), one softplus
        if isinstance(distribution, BinomialLogits):  # the binomial coefficient (1 for a Bernoulli)
            log_p = log_p + gammaln(count + 1.0) - gammaln(value + 1.0) - gammaln(count - value + 1.0)
        return jnp.where(distribution.support.check(value), log_p, -jnp.inf)
    if isinstance(distribution, Independent):  # reach a Bernoulli/Binomial inside .to_event(n)
        log_p = log_density_of(distribution.base_dist, value)
        return jnp.sum(log_p, axis=tuple(range(-distribution.reinterpreted_batch_ndims, 0)))
    if isinstance(distribution, ExpandedDistribution):  # ... or inside .expand(shape)
        batch = jnp.shape(value)[: max(jnp.ndim(value) - distribution.event_dim, 0)]
        log_p = log_density_of(distribution.base_dist, value)
        return jnp.broadcast_to(log_p, jnp.broadcast_shapes(distribution.batch_shape, batch))
    return distribution.log_prob(value)


def log_prob_function(spec, levels):
    """``(value, active, *leaves) -> log density`` of the active elements, summed."""

    def one(value, active, *leaves):
        return jnp.where(active, jnp.sum(log_density_of(spec.rebuild(leaves), value)), 0.0)

    return lambda value, *rest: jnp.sum(_vectorise(one, levels, True)(value, *rest))


def active_function(levels):
    """``(value, active) -> active`` broadcast to one flag per element of the levels."""
    return _vectorise(lambda value, active: jnp.asarray(active, bool), [l._replace(leaf_axes=l.leaf_axes[:1]) for l in levels], True)


sample_p = Primitive("ppl_sample")

_active = contextvars.ContextVar("ppl_active", default=True)
_vmap_depth = contextvars.ContextVar("ppl_vmap_depth", default=0)
_scan_entries = contextvars.ContextVar("ppl_scan_entries", default=())
_improper_staged = contextvars.ContextVar("ppl_improper_staged", default=False)


class Placement(NamedTuple):
    """Where a choice sits among the combinators: how many ``Vmap``s enclose
    it, and for each enclosing ``Scan`` (outermost first) how many ``Vmap``s
    enclosed that scan. A staged ``vmap(scan)`` and ``scan(vmap)`` look alike;
    this tells an interpreter where the step axis goes."""

    vmap_depth: int
    scan_entries: tuple


def placement():
    return Placement(_vmap_depth.get(), _scan_entries.get())


def in_default_context():
    """True outside every ppl Vmap/Scan/switch branch. Inside one, sample_p
    reads context (the shared active flag, the vmap depth) that a cached jit
    trace would not see, so GFI entry points must not jit there."""
    default = _vmap_depth.get() == 0 and _scan_entries.get() == () and _active.get() is True
    return default and not _improper_staged.get()


@contextlib.contextmanager
def staging_improper_priors():
    """Inside, an improper prior (no sampler) is bound as ``sample_p`` instead
    of raising, for staging a program whose interpreter gives every such choice
    its value (the unconstraining transform). GFI entry points do not jit
    inside, so no compiled trace outlives it."""
    token = _improper_staged.set(True)
    try:
        yield
    finally:
        _improper_staged.reset(token)


def improper_priors_staged():
    return _improper_staged.get()


@contextlib.contextmanager
def vmap_level():
    token = _vmap_depth.set(_vmap_depth.get() + 1)
    try:
        yield
    finally:
        _vmap_depth.reset(token)


@contextlib.contextmanager
def scan_level():
    token = _scan_entries.set(_scan_entries.get() + (_vmap_depth.get(),))
    try:
        yield
    finally:
        _scan_entries.reset(token)


def step_axis(placement, num_levels, scan_index):
    """The axis of a choice's value that the ``scan_index``-th enclosing scan stacks along."""
    return num_levels - (placement.vmap_depth - placement.scan_entries[scan_index])


@contextlib.contextmanager
def active_mask(flag):
    """Mark the choices made inside as active only where ``flag`` holds
    (``ppl.switch`` runs each branch under ``index == k``)."""
    token = _active.set(jnp.logical_and(_active.get(), flag))
    try:
        yield
    finally:
        _active.reset(token)


def _impl(key, active, *leaves, address, spec, levels, placement):
    return sample_function(spec, levels)(key, active, *leaves)


def _abstract_eval(key, active, *leaves, address, spec, levels, placement):
    try:
        out = jax.eval_shape(
            sample_function(spec, levels),
            jax.ShapeDtypeStruct(key.shape, key.dtype),
            jax.ShapeDtypeStruct(active.shape, active.dtype),
            *[jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves],
        )
    except NotImplementedError:  # no sampler (an improper prior, staged): the shape of its values
        element = _static_result(lambda *ls: tuple(spec.rebuild(ls).shape()), spec.example_leaves)
        shape = tuple(level.axis_size for level in reversed(levels)) + element
        out = jax.ShapeDtypeStruct(shape, jnp.result_type(float))
    return jax.core.ShapedArray(out.shape, out.dtype)


def _batch(args, dims, *, address, spec, levels, placement):
    key_dim, leaf_dims = dims[0], dims[1:]
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    # Levels fill innermost first; the first `vmap_depth` are ppl's Vmap combinators.
    joint = key_dim is None and len(levels) < placement.vmap_depth
    level = Level(key_dim, tuple(leaf_dims), size, joint)
    out = sample_p.bind(*args, address=address, spec=spec, levels=levels + (level,), placement=placement)
    return out, 0


def _jvp(primals, tangents, *, address, spec, levels, placement):
    key, active, leaves = primals[0], primals[1], primals[2:]
    value = sample_p.bind(*primals, address=address, spec=spec, levels=levels, placement=placement)
    leaf_tangents = [ad.instantiate_zeros(t) for t in tangents[2:]]
    if not leaves:
        return value, ad.Zero.from_primal_value(value)
    sample = sample_function(spec, levels)
    _, tangent = jax.jvp(lambda *ls: sample(key, active, *ls), tuple(leaves), tuple(leaf_tangents))
    return value, tangent


sample_p.def_impl(_impl)
sample_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[sample_p] = _batch
ad.primitive_jvps[sample_p] = _jvp
mlir.register_lowering(sample_p, mlir.lower_fun(_impl, multiple_results=False))


def bind_sample(key, distribution, address, active=True):
    """Draw from ``distribution`` with ``key`` as the choice at ``address`` (a tuple)."""
    leaves, spec = flatten_distribution(distribution)
    active = jnp.logical_and(_active.get(), active)
    return sample_p.bind(key, active, *leaves, address=tuple(address), spec=spec, levels=(), placement=placement())


# ``factor_p``: a term added to the log density (``ppl.factor``). Its value is
# its input; it exists so a staged program shows where the density is touched.
factor_p = Primitive("ppl_factor")


def factor_function(levels):
    """``(active, log_weight) -> log_weight`` with the levels' axes leading."""
    fn = lambda active, log_weight: log_weight
    for level in levels:
        fn = jax.vmap(fn, in_axes=level.leaf_axes, axis_size=level.axis_size)
    return fn


def factor_total_function(levels):
    """``(active, log_weight) -> total`` over the active elements."""
    fn = lambda active, log_weight: jnp.where(active, jnp.sum(log_weight), 0.0)
    for level in levels:
        fn = jax.vmap(fn, in_axes=level.leaf_axes, axis_size=level.axis_size)
    return lambda active, log_weight: jnp.sum(fn(active, log_weight))


def _factor_impl(active, log_weight, *, address, levels, placement):
    return factor_function(levels)(active, log_weight)


def _factor_abstract_eval(active, log_weight, *, address, levels, placement):
    shape = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (active, log_weight)]
    out = jax.eval_shape(factor_function(levels), *shape)
    return jax.core.ShapedArray(out.shape, out.dtype)


def _factor_batch(args, dims, *, address, levels, placement):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    level = Level(None, tuple(dims), size)
    return factor_p.bind(*args, address=address, levels=levels + (level,), placement=placement), 0


def _factor_jvp(primals, tangents, *, address, levels, placement):
    out = factor_p.bind(*primals, address=address, levels=levels, placement=placement)
    tangent = ad.instantiate_zeros(tangents[1])
    return out, factor_function(levels)(primals[0], tangent)


factor_p.def_impl(_factor_impl)
factor_p.def_abstract_eval(_factor_abstract_eval)
batching.primitive_batchers[factor_p] = _factor_batch
ad.primitive_jvps[factor_p] = _factor_jvp
mlir.register_lowering(factor_p, mlir.lower_fun(_factor_impl, multiple_results=False))


def bind_factor(log_weight, address):
    """Mark ``log_weight`` as the factor at ``address`` (a tuple)."""
    log_weight = jnp.asarray(log_weight)
    if not jnp.issubdtype(log_weight.dtype, jnp.floating):
        log_weight = log_weight.astype(jnp.float32)
    return factor_p.bind(_active.get() & jnp.bool_(True), log_weight, address=tuple(address), levels=(), placement=placement())
