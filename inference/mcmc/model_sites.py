"""What trace kernels read off a model's staged program: the distribution
of a random choice (its finite support, for enumerative Gibbs) and which
addresses are factors (``ppl.factor`` terms are no latent and no observation).

Both come from ``ppl.transforms.stage``: one ``sample_p`` / ``factor_p``
equation per choice, carrying its address, its distribution's spec and its
vmap levels. Staging costs one trace of the model; it happens while a kernel's
step is traced (once under ``jax.jit``), and is cached per model and argument
signature otherwise.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ppl.choicemap import as_path, by_path, from_paths, get
from ppl.errors import AddressError, did_you_mean, format_address
from ppl.factor_primitive import factor_p
from ppl.sample_primitive import sample_p
from ppl.transforms import choice_sites, depends_on_first_input, stage

__all__ = ["ChoiceSite", "model_sites", "site_at", "finite_support", "choices_moved_by"]


class ChoiceSite(NamedTuple):
    """One random choice (or factor) of a staged model: its address (a tuple),
    whether it is a factor, its distribution's spec (``None`` for a factor),
    its vmap levels, and its distribution's leaves where the program fixes
    them (Python constants of the model), else ``None``."""

    address: tuple
    is_factor: bool
    spec: Any
    levels: tuple
    constant_leaves: tuple


def model_sites(model, args):
    """``{address tuple: ChoiceSite}`` of every choice and factor ``model``
    makes on ``args`` (arrays may be tracers: only their shapes matter).

    >>> @ppl.gen
    ... def model():
    ...     ppl.sample("z", dist.Bernoulli(0.3))
    ...     ppl.factor("penalty", -1.0)
    >>> [(site.address, site.is_factor) for site in model_sites(model, ()).values()]
    [(('z',), False), (('penalty',), True)]
    """
    leaves, treedef = jax.tree.flatten(tuple(args))
    is_array = lambda leaf: isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.core.Tracer))
    abstract = tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) if is_array(x) else x for x in leaves)
    signature = tuple((x.shape, str(x.dtype)) if isinstance(x, jax.ShapeDtypeStruct) else ("static", x) for x in abstract)
    try:
        hash((model, treedef, signature))
    except TypeError:  # an unhashable static argument: no cache
        return _stage_sites(model, jax.tree.unflatten(treedef, abstract))
    return _cached_sites(model, treedef, signature, abstract)


@functools.lru_cache(maxsize=64)
def _cached_sites(model, treedef, signature, abstract):
    return _stage_sites(model, jax.tree.unflatten(treedef, abstract))


def _stage_sites(model, args):
    program = stage(model, args)  # array arguments as ShapeDtypeStructs: staged from shapes alone
    constants = dict(zip(map(id, program.jaxpr.jaxpr.constvars), program.jaxpr.consts))
    sites = {}
    for eqn in choice_sites(program.jaxpr.jaxpr):
        address, is_factor = tuple(eqn.params["address"]), eqn.primitive is factor_p
        leaves = () if is_factor else tuple(_constant(v, constants) for v in eqn.invars[2:])
        spec = eqn.params["spec"] if eqn.primitive is sample_p else None
        sites[address] = ChoiceSite(address, is_factor, spec, eqn.params["levels"], leaves)
    return sites


def _constant(var, constants):
    """The value of an equation's operand when the program fixes it, else ``None``."""
    if hasattr(var, "val"):  # a Literal
        return jnp.asarray(var.val)
    return constants.get(id(var))


def finite_support(site):
    """The values of one element of ``site`` (a ``ChoiceSite``) as a 1-d array,
    from NumPyro's ``enumerate_support``; ``TypeError`` naming the address
    when the support is not finite, not scalar, or depends on traced
    parameters (then pass ``support=`` to ``gibbs``).

    >>> @ppl.gen
    ... def model():
    ...     ppl.sample("k", dist.DiscreteUniform(2, 4))
    >>> finite_support(model_sites(model, ())[("k",)]).tolist()
    [2, 3, 4]
    """
    name = format_address(site.address)
    if site.is_factor:
        raise TypeError(f"address {name!r} is a factor (ppl.factor), not a random choice")
    first, second = (_element(site, fill) for fill in (0, 1))
    if not first.has_enumerate_support:
        raise TypeError(
            f"address {name!r}: {type(first).__name__} has no finite support to enumerate; enumerative "
            "Gibbs needs a finite discrete choice (Bernoulli, Categorical, DiscreteUniform, Binomial, ...)"
        )
    if first.event_shape != () or first.batch_shape != ():
        shape = tuple(first.batch_shape + first.event_shape)
        raise TypeError(
            f"address {name!r}: one choice holds an array of shape {shape} (an .expand / .to_event site); "
            "enumerative Gibbs moves a scalar choice, or the scalar elements of a gf.vmap (each from its own conditional)"
        )
    with jax.ensure_compile_time_eval():  # concrete: the templates and constants hold no tracer
        try:
            values = [np.ravel(np.asarray(d.enumerate_support(expand=False))) for d in (first, second)]
        except Exception as error:
            raise _traced_support_error(name, first) from error
    if values[0].shape != values[1].shape or not np.array_equal(values[0], values[1]):
        raise _traced_support_error(name, first)
    return jnp.asarray(values[0])


def _element(site, fill):
    """One element's distribution: the program's constants where known, else
    a template filled with ``fill`` (the support must not depend on it)."""
    with jax.ensure_compile_time_eval():
        leaves = [
            known if known is not None else jnp.full(s.shape, fill, s.dtype)  # constants are never batched
            for known, s in zip(site.constant_leaves, site.spec.example_leaves)
        ]
        return site.spec.rebuild(leaves)


def _traced_support_error(name, distribution):
    return TypeError(
        f"address {name!r}: the support of {type(distribution).__name__} depends on traced parameters; "
        "pass the values explicitly: gibbs(model, address, support=jnp.arange(...))"
    )


def site_at(sites, address):
    """The ``ChoiceSite`` at ``address`` (a string or tuple), or ``AddressError``.

    >>> model = ppl.gen(lambda: ppl.sample("z", dist.Bernoulli(0.3)))
    >>> site_at(model_sites(model, ()), "z").address
    ('z',)
    """
    path = as_path(address)
    if path not in sites:
        valid = [format_address(a) for a in sites]
        hint = did_you_mean(format_address(path), valid)
        raise AddressError(
            f"address {format_address(path)!r} is not a choice of the model{hint}; "
            f"its choices: {', '.join(map(repr, sorted(valid))) or 'none'}"
        )
    return sites[path]


def choices_moved_by(model, trace, address):
    """The addresses (tuples) of the trace's other choices whose values
    ``update`` changes when the value at ``address`` changes: those of the
    ``ppl.cond`` / ``ppl.switch`` branches it chooses between (the branch
    not taken holds zeros), and factors. Found from the dependence of
    ``update``'s new choices on the value (conservative: when unsure, moved).

    >>> @ppl.gen
    ... def model():
    ...     wide = ppl.sample("wide", dist.Bernoulli(0.1))
    ...     wide_scale = ppl.gen(lambda: ppl.sample("scale", dist.HalfNormal(5.0)))
    ...     narrow_scale = ppl.gen(lambda: 0.1)
    ...     scale = ppl.sample("s", ppl.cond(wide, wide_scale, narrow_scale))
    ...     ppl.sample("y", dist.Normal(0.0, scale))
    >>> trace = model.simulate(jax.random.key(0), ())
    >>> choices_moved_by(model, trace, "wide")
    [('s', 'scale')]
    """
    path = as_path(address)
    moved = lambda value: model.update(jax.random.key(0), trace, from_paths({path: value}), trace.args)[0].choices
    flags = depends_on_first_input(moved, get(trace.choices, path))
    return [p for p, flag in by_path(flags).items() if flag and p != path]
