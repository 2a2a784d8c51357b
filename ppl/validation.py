"""Support checks of observed values, run on the concrete values a user passes.

Shapes and dtypes are checked at trace time, where they are known. Whether an
observed value lies in its distribution's support depends on the value, which
under ``jax.jit`` is not known while tracing. So each constrained choice whose
support does not depend on traced parameters registers ``(address, support)``
while being traced; the GFI entry points keep that list per compiled
signature and check the concrete constraints against it on every call.
Values that are only ever traced (inside a user's ``jit``) get a log density
of ``-inf`` outside the support instead, never a silently wrong number.
"""

import contextlib
import contextvars
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from ppl.checked import check, checking
from ppl.choicemap import get
from ppl.errors import check_support

__all__ = [
    "register_support_check",
    "collect_support_checks",
    "no_support_checks",
    "run_support_checks",
    "once_per_array",
    "check_finite_arguments",
]

_collectors = contextvars.ContextVar("ppl_support_collectors", default=())
_disabled = contextvars.ContextVar("ppl_support_disabled", default=False)


def is_static_support(support):
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(support))


def register_support_check(path, support):
    if not _disabled.get():
        for collector in _collectors.get():
            collector.append((tuple(path), support))


@contextlib.contextmanager
def collect_support_checks():
    checks = []
    token = _collectors.set(_collectors.get() + (checks,))
    try:
        yield checks
    finally:
        _collectors.reset(token)


@contextlib.contextmanager
def no_support_checks():
    token = _disabled.set(True)
    try:
        yield
    finally:
        _disabled.reset(token)


def run_support_checks(checks, constraints):
    for path, support in checks:
        value = get(constraints, path) if path else constraints
        if value is None or isinstance(value, (dict, jax.core.Tracer)):
            continue
        once_per_array(value, ("support", repr(support)), lambda: check_support(value, support, path))


_passed = {}  # (id(array), what) -> weak reference to the array that passed that check


def once_per_array(value, what, check_fn):
    """Run ``check_fn`` (which raises if ``value`` fails it) unless this very
    JAX array already passed the check ``what``. JAX arrays are immutable, so
    the same data given on every call of a loop is read from the device once,
    not at every call. Other values are checked every time."""
    if not isinstance(value, jax.Array) or isinstance(value, jax.core.Tracer):
        return check_fn()
    key = (id(value), what)
    seen = _passed.get(key)
    if seen is not None and seen() is value:
        return None
    check_fn()
    if len(_passed) > 4096:  # ids of collected arrays are reused: forget them all now and then
        _passed.clear()
    _passed[key] = weakref.ref(value)


def check_finite_arguments(args, name="args"):
    """Raise if a concrete floating argument holds NaN or infinity."""
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
        if isinstance(leaf, jax.core.Tracer) and jnp.issubdtype(leaf.dtype, jnp.inexact):
            if checking():  # staged only under ppl.checked
                where = f"{name}{jax.tree_util.keystr(key_path)}"
                check(jnp.isfinite(leaf), f"{where} contains NaN or infinite values: {{value}}", value=leaf)
        if isinstance(leaf, jax.core.Tracer) or not hasattr(leaf, "dtype"):
            if isinstance(leaf, float) and not np.isfinite(leaf):
                raise ValueError(f"{name}{jax.tree_util.keystr(key_path)} is {leaf}: arguments must be finite")
            continue
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            once_per_array(leaf, "finite", lambda: _check_finite(leaf, f"{name}{jax.tree_util.keystr(key_path)}"))


def _check_finite(leaf, where):
    # numpy, not jnp: a concrete array closed over by a user's jit would become a tracer in jnp ops.
    if not np.all(np.isfinite(np.asarray(leaf))):
        raise ValueError(f"{where} (shape {tuple(leaf.shape)}) contains NaN or infinite values: arguments must be finite")
