"""What ``update`` and ``regenerate`` need to know about the previous trace,
so that they run the model once, on the new trace only.

- Which previous choices exist (a choice of a ``ppl.switch`` branch not taken
  was not made): a trace keeps its ``used`` flags, Python ``True`` for a
  choice always made (which costs nothing), a boolean per element for a choice
  made by a switch.
- For ``regenerate``, the old log density, under the *old* parents, of each
  choice the reverse move redraws: the selected ones, and those the new trace
  no longer makes (switch-made choices: a trace keeps their log densities, in
  one vector). A selected choice whose distribution is the same in the new run
  is scored there, at its old value: when the arguments are the trace's and
  no value made before it (in the order the model runs) may differ from the
  old trace's (``changed``, tracked while the new run is traced), or when its
  distribution has no traced parameter at all. Inside a scan whose choices are
  redrawn (the carry passes them on), or a switch whose index may have moved
  (the old value may come from another branch), nothing counts as unmoved.
  Otherwise ``regenerate`` scores the old trace too, as a second run.
"""

import contextlib
import contextvars
import math
from typing import Any, NamedTuple

import jax.numpy as jnp

from ppl.choicemap import by_path

__all__ = [
    "Sites",
    "record",
    "dropped_log_density",
    "reverse_log_density",
    "add_reverse",
    "tracking_changes",
    "changed",
    "mark_changed",
    "snapshot",
    "restore",
]


class Sites(NamedTuple):
    """The used flags (a choice map) and the log densities of the choices a
    switch makes (per element, in one vector; ``None`` when there are none)."""

    used: Any
    switched_log_densities: Any


def _switched(used):
    return {path: flag for path, flag in by_path(used).items() if flag is not True}


def record(used, site_log_densities):
    """The ``Sites`` of an edit's used flags and per-choice log densities.

    >>> sites = record({"a": True, "b": jnp.array([True, False])}, {"a": jnp.ones(()), "b": jnp.array([2.0, 0.0])})
    >>> sites.switched_log_densities.tolist()
    [2.0, 0.0]
    """
    densities = by_path(site_log_densities)
    parts = [jnp.ravel(densities[path]) for path in _switched(used)]
    return Sites(used, jnp.concatenate(parts) if parts else None)


def dropped_log_density(old, new_used):
    """The old log density of the switch-made choices of ``old`` (``Sites``)
    that the new trace no longer makes (the new run scores the others).

    >>> old = record({"a": True, "b": jnp.array([True, True])}, {"a": jnp.ones(()), "b": jnp.array([2.0, 3.0])})
    >>> float(dropped_log_density(old, {"a": True, "b": jnp.array([False, True])}))
    2.0
    """
    new_by_path, total, start = by_path(new_used), 0.0, 0
    for path, used in _switched(old.used).items():
        size = math.prod(jnp.shape(used))
        log_density = old.switched_log_densities[start : start + size].reshape(jnp.shape(used))
        start += size
        new = new_by_path.get(path, False)
        if new is not True:
            total = total + jnp.sum(jnp.where(jnp.logical_and(used, jnp.logical_not(new)), log_density, 0.0))
    return total


def reverse_log_density(old_used, old_log_densities, new_used, selection):
    """The old log density of every choice the reverse move redraws (selected
    ones and dropped ones), from the old trace's per-choice log densities
    ``{path: log density}``: what ``regenerate`` uses after scoring the old trace.

    >>> used = {"a": True, "b": True}
    >>> float(reverse_log_density(used, {("a",): 1.5, ("b",): 2.0}, used, ppl.select("b")))
    2.0
    """
    new_by_path, old_by_path = by_path(new_used), by_path(old_used)
    reverse = 0.0
    for path, log_density in old_log_densities.items():
        redrawn = selection.contains(path) if path else selection.everything
        dropped = jnp.logical_not(new_by_path[path]) if path in new_by_path else True
        moved = jnp.logical_and(old_by_path[path], jnp.logical_or(redrawn, dropped))
        reverse = reverse + jnp.sum(jnp.where(moved, log_density, 0.0))
    return reverse


def add_reverse(a, b):
    """Sum of two in-run reverse terms; ``None`` (not computable in this run) wins."""
    return None if a is None or b is None else a + b


# ----- tracking, while the new run is traced, whether a value may have changed -----


class _Changes:
    __slots__ = ("any",)

    def __init__(self, any_):
        self.any = any_


_changes = contextvars.ContextVar("ppl_changes", default=None)


@contextlib.contextmanager
def tracking_changes(changed_already=False):
    """Track, while an edit is traced, whether a value it made so far may
    differ from the previous trace's (``changed``, ``mark_changed``)."""
    token = _changes.set(_Changes(changed_already))
    try:
        yield
    finally:
        _changes.reset(token)


def changed():
    """May a value made so far differ from the previous trace's? (``True`` when not tracked.)"""
    changes = _changes.get()
    return changes is None or changes.any


def mark_changed():
    """The value just made may differ from the previous trace's."""
    changes = _changes.get()
    if changes is not None:
        changes.any = True


def snapshot():
    """The tracked state (``None`` when not tracked), for ``restore``: a switch
    traces each branch from the state it was entered in."""
    changes = _changes.get()
    return None if changes is None else changes.any


def restore(state):
    changes = _changes.get()
    if changes is not None and state is not None:
        changes.any = state
