"""A model around one of its scans: what a particle filter needs.

A state-space model is ``prefix; scan(step); suffix``: the prefix draws the
initial state (and maybe parameters and a first observation), a
``gf.scan(T)`` runs the transitions, the suffix computes the return value.
A particle filter advances the scan one step at a time, across particles, so
it needs the pieces apart:

- ``scan_sites(model, args)``: the scans it could advance (their addresses,
  step functions and lengths);
- ``run_prefix``: the model with the scan at ``path`` stopped before its first
  step, returning the prefix's choices, weight and the scan's initial carry
  and ``xs``; a random choice after the scan is an error that names it;
- ``run_with_steps``: the whole model again with that scan's steps given (the
  filter's trajectories), for the final particles' traces and return values.

Both run the model's body directly (not a cached compiled call), so the
interception, a context variable read by ``Scan``, is always seen.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.combinator_context import active_flag, hooking_scans, placement
from ppl.choicemap import NONE, by_path, flatten, from_paths, to_arrays
from ppl.core import Edit, GenerativeFunction, as_args
from ppl.errors import AddressError, format_address
from ppl.trace import Trace

__all__ = ["ScanSite", "PrefixRun", "scan_sites", "run_prefix", "run_with_steps", "split_observations"]


class ScanSite(NamedTuple):
    """A scan of a model: its address (a tuple path), its step generative
    function ``step(carry, x) -> (carry, y)`` and its number of steps."""

    path: tuple
    step: GenerativeFunction
    length: int


class PrefixRun(NamedTuple):
    choices: Any  # the prefix's choices (the scan's address holds zero steps)
    log_weight: Any  # log p(constrained prefix choices): generate's weight
    log_density: Any  # log p of all prefix choices
    init_carry: Any
    xs: Any


def scan_sites(model, args):
    """Every scan of ``model`` outside any vmap, scan or switch branch, in the
    order the model makes them.

    >>> @ppl.gen
    ... def step(x, _):
    ...     return ppl.sample("x", dist.Normal(x, 1.0)), None
    >>> @ppl.gen
    ... def chain(T):
    ...     return ppl.sample("steps", step.scan(T)(0.0, None))
    >>> [(site.path, site.length) for site in scan_sites(chain, (5,))]
    [(('steps',), 5)]
    """
    found = []

    def record(scan, key, args, constraints, prev, selection, path):
        outermost = placement() == (0, ()) and active_flag() is True
        if outermost and len(args) == 2:
            found.append(ScanSite(path, scan.gf, scan._steps(args[1], path)))
        return scan.plain_edit(key, args, constraints, prev, selection, path)

    with hooking_scans(record):
        jax.eval_shape(lambda key: model._edit(key, as_args(args), None, None, NONE, ()), jax.random.key(0))
    return found


def split_observations(observations, path):
    """``(observations outside the scan at path, observations of its steps)``."""
    flat = by_path(to_arrays(observations or {}))
    inside = {p[len(path):]: v for p, v in flat.items() if p[: len(path)] == path}
    outside = {p: v for p, v in flat.items() if p[: len(path)] != path}
    return from_paths(outside) if outside else {}, (from_paths(inside) if inside else {})


def run_prefix(key, model, args, constraints, path):
    """Run ``model`` (generate, ``constraints`` outside the scan) with the scan
    at ``path`` making zero steps; a ``PrefixRun``. Call it inside the
    function you vmap over particles."""
    cell = {}

    def stop(scan, key, args, constraints, prev, selection, where):
        if where != path:
            return scan.plain_edit(key, args, constraints, prev, selection, where)
        init, xs = args
        cell["init"], cell["xs"] = init, xs
        empty = jax.tree.map(lambda x: x[:0], xs)
        return type(scan)(scan.gf, 0).plain_edit(key, (init, empty), None, None, NONE, where)

    with hooking_scans(stop):
        edit = model._edit(key, as_args(args), constraints, None, NONE, ())
    if "init" not in cell:
        raise AddressError(f"the model makes no scan at {format_address(path)!r}")
    _check_nothing_after(edit.choices, path)
    return PrefixRun(edit.choices, edit.kept_log_density, edit.log_density, cell["init"], cell["xs"])


def _check_nothing_after(choices, path):
    """Raise if a choice follows the scan at ``path`` in the model's order
    (a filter advances the scan last; a later choice would never be weighted)."""
    addresses = list(flatten(choices))
    scan_address = format_address(path)
    inside = [i for i, a in enumerate(addresses) if a == scan_address or a.startswith(scan_address + "/")]
    later = addresses[inside[-1] + 1 :] if inside else []
    if later:
        raise AddressError(
            f"the model makes the choice(s) {later} after the scan at {scan_address!r}; a particle filter "
            "advances that scan last, so move them before it (or into its step)"
        )


def run_with_steps(model, args, prefix_choices, path, steps, steps_log_density, final_carry, ys):
    """The model's ``Trace`` with its prefix choices given and the scan at
    ``path`` replaced by given steps (stacked choices, their total log density,
    the final carry and the stacked step outputs). The trace keeps no sites
    (``trace._sites`` is None), like an importance particle's."""

    def given(scan, key, args, constraints, prev, selection, where):
        if where != path:
            return scan.plain_edit(key, args, constraints, prev, selection, where)
        used = jax.tree.map(lambda _: True, steps)
        zeros = jax.tree.map(lambda x: jnp.zeros((), jnp.result_type(float)), steps)
        total = jnp.asarray(steps_log_density, jnp.result_type(float))
        return Edit(steps, used, zeros, (final_carry, ys), total, total)

    constraints = {p: v for p, v in by_path(prefix_choices).items() if p[: len(path)] != path}
    with hooking_scans(given):
        edit = model._edit(None, as_args(args), from_paths(constraints), None, NONE, ())
    return Trace(edit.choices, edit.retval, as_args(args), edit.log_density)
