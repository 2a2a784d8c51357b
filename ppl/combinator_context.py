"""Where a choice sits among the combinators, read while a model is traced.

ppl's combinators set three context variables around the bodies they run:
the *active* flag (``ppl.switch`` runs every branch under a vmap; only the
taken branch's choices count), the number of enclosing ``Vmap``s, and for
each enclosing ``Scan`` how many ``Vmap``s enclosed it. A random choice
records them when it is bound (its ``active`` operand, its ``Placement``).
"""

import contextlib
import contextvars
from typing import NamedTuple

import jax.numpy as jnp

__all__ = [
    "Placement",
    "placement",
    "active_flag",
    "active_mask",
    "vmap_level",
    "scan_level",
    "step_axis",
    "in_default_context",
    "staging_improper_priors",
    "improper_priors_staged",
    "scan_hook",
    "hooking_scans",
]

_active = contextvars.ContextVar("ppl_active", default=True)
_vmap_depth = contextvars.ContextVar("ppl_vmap_depth", default=0)
_scan_entries = contextvars.ContextVar("ppl_scan_entries", default=())
_improper_staged = contextvars.ContextVar("ppl_improper_staged", default=False)
# A function that runs every Scan met (ppl.sequential: a particle filter stops
# or replaces one scan), or None for plain scans.
_scan_hook = contextvars.ContextVar("ppl_scan_hook", default=None)


class Placement(NamedTuple):
    """Where a choice sits among the combinators: how many ``Vmap``s enclose
    it, and for each enclosing ``Scan`` (outermost first) how many ``Vmap``s
    enclosed that scan. A staged ``vmap(scan)`` and ``scan(vmap)`` look alike;
    this tells an interpreter where the step axis goes.

    >>> with vmap_level(), scan_level():
    ...     placement()
    Placement(vmap_depth=1, scan_entries=(1,))
    """

    vmap_depth: int
    scan_entries: tuple


def placement():
    """The ``Placement`` of a choice made here."""
    return Placement(_vmap_depth.get(), _scan_entries.get())


def active_flag():
    """Whether a choice made here counts (a traced bool inside ``ppl.switch``
    branches, ``True`` elsewhere).

    >>> active_flag()
    True
    """
    return _active.get()


def in_default_context():
    """True outside every ppl Vmap/Scan/switch branch. Inside one, sample_p
    reads context (the shared active flag, the vmap depth) that a cached jit
    trace would not see, so GFI entry points must not jit there.

    >>> with vmap_level():
    ...     in_default_context()
    False
    """
    default = _vmap_depth.get() == 0 and _scan_entries.get() == () and _active.get() is True
    return default and not _improper_staged.get() and _scan_hook.get() is None


def scan_hook():
    """The function that runs a ``Scan`` here (see ``hooking_scans``), or None."""
    return _scan_hook.get()


@contextlib.contextmanager
def hooking_scans(fn):
    """Inside, every ``Scan`` runs as ``fn(scan, key, args, constraints, prev,
    selection, path)``, which may call ``scan.plain_edit`` with the same or
    other arguments. GFI entry points do not jit inside."""
    token = _scan_hook.set(fn)
    try:
        yield
    finally:
        _scan_hook.reset(token)


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
    """True inside ``staging_improper_priors``."""
    return _improper_staged.get()


@contextlib.contextmanager
def vmap_level():
    """Inside: one more ``Vmap`` encloses the choices made."""
    token = _vmap_depth.set(_vmap_depth.get() + 1)
    try:
        yield
    finally:
        _vmap_depth.reset(token)


@contextlib.contextmanager
def scan_level():
    """Inside: one more ``Scan`` encloses the choices made."""
    token = _scan_entries.set(_scan_entries.get() + (_vmap_depth.get(),))
    try:
        yield
    finally:
        _scan_entries.reset(token)


def step_axis(placement, num_levels, scan_index):
    """The axis of a choice's value that the ``scan_index``-th enclosing scan
    stacks along (a choice with ``num_levels`` vmap levels).

    >>> step_axis(Placement(vmap_depth=1, scan_entries=(0,)), 1, 0)  # scan(vmap(choice)): steps lead
    0
    >>> step_axis(Placement(vmap_depth=1, scan_entries=(1,)), 1, 0)  # vmap(scan(choice)): steps second
    1
    """
    return num_levels - (placement.vmap_depth - placement.scan_entries[scan_index])


@contextlib.contextmanager
def active_mask(flag):
    """Mark the choices made inside as active only where ``flag`` holds
    (``ppl.switch`` runs each branch under ``index == k``).

    >>> with active_mask(jnp.bool_(False)):
    ...     bool(active_flag())
    False
    """
    token = _active.set(jnp.logical_and(_active.get(), flag))
    try:
        yield
    finally:
        _active.reset(token)
