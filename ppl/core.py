"""The generative function interface (GFI).

Every generative function implements one internal method, ``_edit``, which
runs the function once while, at each random choice, taking the value from
the constraints, else reusing the previous trace's value (unless selected),
else drawing a fresh one. All five GFI methods are this one edit:

- ``simulate``: nothing constrained, nothing previous;
- ``assess``: everything constrained, no key;
- ``generate``: some addresses constrained; weight = log p of the kept choices;
- ``update``: previous trace + new constraints and arguments;
  weight = log p(new kept) - log p(old trace);
- ``regenerate``: previous trace, selected addresses redrawn;
  weight as update, plus the old density of what the reverse move redraws.

Besides choices, an edit reports per choice whether it is *used* (a branch of
``ppl.switch`` not taken leaves its choices unused) and its log density; these
mirror the choice map, leaf for leaf. A trace keeps them (``ppl.sites``), so
that ``update`` and ``regenerate`` run the model once, on the new trace only.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import NONE, Selection, by_path, flatten, from_paths, to_arrays
from ppl.errors import MissingValueError, unknown_addresses_error
from ppl.jit import jit_gfi
from ppl.sites import dropped_log_density, record, reverse_log_density, tracking_changes
from ppl.trace import Trace, is_static
from ppl.validation import check_finite_arguments, no_support_checks

__all__ = ["GenerativeFunction", "Call", "Edit", "Prev", "site_log_densities"]


class Edit(NamedTuple):
    choices: Any
    used: Any  # same structure as choices: bool (Python True when statically used)
    site_log_densities: Any  # same structure as choices: log density of each choice
    retval: Any
    log_density: Any
    kept_log_density: Any  # log density of the choices that were not freshly drawn
    # regenerate's reverse term, scored by this run: the old log density of the previous
    # choices it redrew (None: a redrawn choice's parents moved, so this run cannot)
    reverse_log_density: Any = 0.0


class Prev(NamedTuple):
    choices: Any
    used: Any


class Call(NamedTuple):
    """A generative function applied to arguments: ``ppl.sample(address, gf(*args))``."""

    gf: Any
    args: tuple


def as_key(key):
    """Accept typed keys (``jax.random.key``) and raw ``PRNGKey`` arrays."""
    if key is None:
        return key
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype is None or jnp.shape(key)[-1:] != (2,) or dtype != jnp.uint32:
        raise TypeError(
            f"expected a JAX random key, e.g. jax.random.key(0), got {_describe(key)}; "
            "split it (jax.random.split) for independent calls"
        )
    return jax.random.wrap_key_data(key)


def _describe(value):
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} {value!r}" if shape is None else f"{type(value).__name__} of shape {tuple(shape)}"


def as_args(args):
    """The arguments as a tuple; anything else is an error (a bare array would
    be split into its elements)."""
    if isinstance(args, (tuple, list)):
        return tuple(args)
    raise TypeError(f"args must be a tuple, e.g. (xs,) for one argument or () for none; got {_describe(args)}")


class GenerativeFunction:
    """Abstract base of every generative function: subclasses implement ``_edit``
    and nothing else; the GFI methods below are final."""

    def _edit(self, key, args, constraints, prev, selection, path) -> Edit:
        raise NotImplementedError

    def __call__(self, *args):
        return Call(self, args)

    # ----- the GFI ---------------------------------------------------------

    def simulate(self, key, args) -> Trace:
        """Run forwards: ``trace = gf.simulate(key, args)``."""
        args = as_args(args)
        check_finite_arguments(args)
        return _with_args(_simulate(self, as_key(key), args), args)

    def assess(self, choices, args):
        """``(log_density, retval)`` of a complete choice map."""
        args = as_args(args)
        check_finite_arguments(args)
        return _with_unknown_addresses(self, choices, args, lambda: _assess(self, to_arrays(choices), args))

    def generate(self, key, constraints, args):
        """``(trace, log_weight)``: constrained addresses take the given values, the
        rest are drawn from the model; log_weight = log p(all) - log q(drawn)."""
        args = as_args(args)
        check_finite_arguments(args)
        trace, log_weight = _generate(self, as_key(key), to_arrays(constraints or {}), args)
        return _with_args(trace, args), log_weight

    def update(self, key, trace, constraints, args):
        """``(new_trace, log_weight, discard)`` after changing arguments and/or
        constraining addresses; log_weight = log p(new) - log p(old) - log q(fresh)."""
        args = as_args(args)
        check_finite_arguments(args)
        new_trace, log_weight, discard = _update(self, as_key(key), trace, to_arrays(constraints or {}), args)
        return _with_args(new_trace, args), log_weight, discard

    def regenerate(self, key, trace, selection, args):
        """``(new_trace, log_weight)`` with the selected addresses redrawn from the
        model: the Metropolis-Hastings weight of that proposal. The model runs
        once when ``args`` are the trace's (the same objects: ``trace.args``,
        or the arguments the trace was made with) and no redrawn choice has a
        parent that moves too; otherwise also on the old trace."""
        args = as_args(args)
        check_finite_arguments(args)
        if not isinstance(selection, Selection):
            raise TypeError(f"regenerate takes a ppl.Selection (ppl.select(...)), got {type(selection).__name__}")
        new_trace, log_weight = _regenerate(self, as_key(key), trace, selection, args, _same_arguments(args, trace.args))
        return _with_args(new_trace, args), log_weight

    # ----- combinators -----------------------------------------------------

    def vmap(self, in_axes=0, axis_size=None):
        """Map over a leading axis of the arguments: choices gain a leading axis.

        >>> @ppl.gen
        ... def point(x, slope):
        ...     return ppl.sample("y", dist.Normal(slope * x, 1.0))
        >>> trace = point.vmap(in_axes=(0, None)).simulate(jax.random.key(0), (jnp.arange(4.0), 2.0))
        >>> trace.choices["y"].shape
        (4,)
        """
        from ppl.combinators import Vmap

        return Vmap(self, in_axes, axis_size)

    def repeat(self, n):
        """``n`` independent runs on the same arguments."""
        from ppl.combinators import Vmap

        return Vmap(self, None, n)

    def scan(self, length=None):
        """A Markov chain: ``gf(carry, x) -> (carry, y)`` over ``length`` steps;
        the scanned function takes ``(init_carry, xs)``."""
        from ppl.combinators import Scan

        return Scan(self, length)


def _trace(edit, args):
    """The trace of an edit, keeping its sites for the next edit."""
    return Trace(edit.choices, edit.retval, args, edit.log_density, record(edit.used, edit.site_log_densities))


@jit_gfi()
def _simulate(gf, key, args):
    return _trace(gf._edit(key, args, None, None, NONE, ()), args)


@jit_gfi(constraints_arg=0)
def _assess(gf, choices, args):
    edit = gf._edit(None, args, choices, None, NONE, ())
    return edit.log_density, edit.retval


@jit_gfi(constraints_arg=1)
def _generate(gf, key, constraints, args):
    edit = gf._edit(key, args, constraints, None, NONE, ())
    return _trace(edit, args), edit.kept_log_density


def site_log_densities(gf, choices, args):
    """The log density of each choice of a complete choice map, as a choice map
    of the same structure (factors count only in ``assess``'s total).

    >>> @ppl.gen
    ... def model():
    ...     ppl.sample("a", dist.Normal(0.0, 1.0))
    ...     ppl.sample("b", dist.Normal(0.0, 1.0).expand([2]))
    >>> densities = ppl.site_log_densities(model, {"a": 0.0, "b": jnp.zeros(2)}, ())
    >>> round(float(densities["a"]), 4), densities["b"].shape
    (-0.9189, ())
    """
    args = as_args(args)
    check_finite_arguments(args)
    return _with_unknown_addresses(gf, choices, args, lambda: _site_log_densities(gf, to_arrays(choices), args))


@jit_gfi(constraints_arg=0)
def _site_log_densities(gf, choices, args):
    return gf._edit(None, args, choices, None, NONE, ()).site_log_densities


def _with_unknown_addresses(gf, choices, args, run):
    """``run()``; when a complete choice map lacks a value and names addresses
    the model never visits (a misspelt observation), say which, with the
    nearest valid address, rather than only which value is missing."""
    try:
        return run()
    except MissingValueError as error:
        unknown, valid = _unvisited(gf, choices, args)
        if not unknown:
            raise
        raise unknown_addresses_error(unknown, valid, (), what=f"{error}, and the choice map's keys") from None


def _unvisited(gf, choices, args):
    """The choice map's addresses that a run of ``gf`` does not make, and those it does."""
    try:
        made = jax.eval_shape(lambda key: gf.simulate(key, args).choices, jax.random.key(0))
    except Exception:  # a model that cannot be simulated (improper priors): no hint
        return [], []
    valid = list(flatten(made)) if isinstance(made, dict) else []
    return [a for a in flatten(choices) if a not in valid], valid


def _score_previous(gf, trace):
    """``(used, site log densities)`` of the old trace, by running the model on it."""
    with no_support_checks():
        old = gf._edit(None, trace.args, trace.choices, None, NONE, ())
    return old.used, old.site_log_densities


def _previous_sites(gf, trace):
    """The old trace's ``Sites``: kept in traces the GFI methods make; scored
    once (one run of the model) for a trace built otherwise (importance particles)."""
    return trace._sites if trace._sites is not None else record(*_score_previous(gf, trace))


def _discard(trace, constraints, new_choices):
    """Old values the edit overwrote (constrained) or no longer visits."""
    old, new = by_path(trace.choices), by_path(new_choices)
    constrained = by_path(constraints) if constraints else {}
    return from_paths({p: v for p, v in old.items() if p in constrained or p not in new})


@jit_gfi(constraints_arg=2)
def _update(gf, key, trace, constraints, args):
    old = _previous_sites(gf, trace)
    edit = gf._edit(key, args, constraints, Prev(trace.choices, old.used), NONE, ())
    return _trace(edit, args), edit.kept_log_density - trace.log_density, _discard(trace, constraints, edit.choices)


@jit_gfi()
def _regenerate(gf, key, trace, selection, args, same_arguments):
    scored = None if trace._sites is not None else _score_previous(gf, trace)
    old = trace._sites if scored is None else record(*scored)
    with tracking_changes(changed_already=not same_arguments):
        edit = gf._edit(key, args, None, Prev(trace.choices, old.used), selection, ())
    if same_arguments and edit.reverse_log_density is not None:
        reverse = edit.reverse_log_density + dropped_log_density(old, edit.used)
    else:  # a redrawn choice's parents moved (or the arguments did): score the old trace
        used, densities = scored or _score_previous(gf, trace)
        reverse = reverse_log_density(used, by_path(densities), edit.used, selection)
    return _trace(edit, args), edit.kept_log_density - trace.log_density + reverse


def _with_args(trace, args):
    """``trace`` holding the caller's own argument objects (not the copies a
    jitted call returns), so that passing them again is recognised."""
    return Trace(trace.choices, trace.retval, args, trace.log_density, trace._sites)


def _same_arguments(args, previous):
    """Are ``args`` the previous trace's: the same array objects (or tracers)
    and equal Python values? Then a choice whose parents did not move keeps
    its distribution. Identity, never a comparison of array values: that would
    wait for the device and read the data at every call."""
    new, new_structure = jax.tree.flatten(tuple(args))
    old, old_structure = jax.tree.flatten(tuple(previous))
    return new_structure == old_structure and all(_same_leaf(a, b) for a, b in zip(new, old))


def _same_leaf(a, b):
    if a is b:
        return True
    return is_static(a) and is_static(b) and type(a) is type(b) and a == b
