"""``jit_gfi``: compile a GFI entry point once per argument signature.

Array leaves of the inputs are traced; Python scalars, strings, callables and
generative functions stay static (usable in shapes and Python control flow
inside models), so no wrapper type such as GenJAX's ``Const`` is needed.
"""

import functools

import jax

from ppl.combinator_context import in_default_context
from ppl.trace import join_static, split_static
from ppl.validation import collect_support_checks, register_support_check, run_support_checks

__all__ = ["jit_gfi"]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(fn, description, *dynamic):
    return fn(*join_static(dynamic, description))


def _signature(dynamic):
    return tuple((getattr(x, "shape", ()), str(getattr(x, "dtype", type(x)))) for x in dynamic)


def jit_gfi(constraints_arg=None):
    """Decorate ``fn(gf, *inputs)``; ``inputs[constraints_arg]`` holds the
    user's constraints, whose support checks run on every call."""

    def decorate(fn):
        checks_by_signature = {}

        @functools.wraps(fn)
        def wrapper(*inputs):
            dynamic, description = split_static(inputs)
            with collect_support_checks() as collected:
                out = _run(fn, description, *dynamic) if in_default_context() else fn(*inputs)
            signature = (description, _signature(dynamic))
            if collected:
                checks_by_signature[signature] = collected
            else:  # JAX reused a cached trace, so the body did not run: replay its
                # checks to any enclosing collector (e.g. importance around generate).
                for path, support in checks_by_signature.get(signature, ()):
                    register_support_check(path, support)
            if constraints_arg is not None:
                run_support_checks(checks_by_signature.get(signature, ()), inputs[constraints_arg + 1])
            return out

        return wrapper

    return decorate
