"""``jit_gfi``: compile a GFI entry point once per argument signature.

Array leaves of the inputs are traced; Python scalars, strings, callables and
generative functions stay static (usable in shapes and Python control flow
inside models), so no wrapper type such as GenJAX's ``Const`` is needed.
"""

import functools

import jax
import numpy as np

from ppl.checked import checking
from ppl.combinator_context import in_default_context
from ppl.trace import join_static, split_static
from ppl.validation import collect_support_checks, register_support_check, run_support_checks

__all__ = ["jit_gfi"]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run(fn, description, checking, *dynamic):  # `checking`: a separate trace under ppl.checked
    inputs = join_static(dynamic, description)
    return _checked_outputs(inputs[0], fn(*inputs))


_ARRAY_LIKE = (jax.Array, jax.core.Tracer, np.ndarray, np.generic, bool, int, float, complex)


def _checked_outputs(gf, out):
    """A GFI result holds only arrays: a model that returns, say, a string
    would otherwise fail inside jit with JAX's message, naming no model."""
    for leaf in jax.tree.leaves(out):
        if not isinstance(leaf, _ARRAY_LIKE):
            raise TypeError(
                f"{gf!r} returned a value holding a {type(leaf).__name__} ({leaf!r}): a generative function "
                "returns arrays, numbers, or tuples/lists/dicts of them (JAX pytrees); keep other Python "
                "values outside the model"
            )
    return out


def _signature(dynamic):
    """What JAX's cache keys a call on: shapes and *canonical* dtypes (a NumPy
    float64 array reuses the float32 trace when x64 is off), weak types."""
    canonical = lambda dtype: jax.dtypes.canonicalize_dtype(dtype, allow_extended_dtype=True)
    return tuple((tuple(x.shape), str(canonical(x.dtype)), _weak(x)) for x in dynamic)


def _weak(x):
    return bool(getattr(x, "weak_type", False))


def jit_gfi(constraints_arg=None):
    """Decorate ``fn(gf, *inputs)``; ``inputs[constraints_arg]`` holds the
    user's constraints, whose support checks run on every call."""

    def decorate(fn):
        checks_by_signature = {}

        @functools.wraps(fn)
        def wrapper(*inputs):
            dynamic, description = split_static(inputs)
            signature = (description, _signature(dynamic))
            known = checks_by_signature.get(signature)
            if constraints_arg is not None and known is not None:  # before the call, while the device is idle
                run_support_checks(known, inputs[constraints_arg + 1])
            with collect_support_checks() as collected:
                out = _run(fn, description, checking(), *dynamic) if in_default_context() else _checked_outputs(inputs[0], fn(*inputs))
            if collected:
                checks_by_signature[signature] = collected
            else:  # JAX reused a cached trace, so the body did not run: replay its
                # checks to any enclosing collector (e.g. importance around generate).
                for path, support in checks_by_signature.get(signature, ()):
                    register_support_check(path, support)
            if constraints_arg is not None and known is None:  # the first call: the checks are known now
                run_support_checks(checks_by_signature.get(signature, ()), inputs[constraints_arg + 1])
            return out

        return wrapper

    return decorate
