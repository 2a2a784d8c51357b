"""Every use of JAX internals (``jax.extend``, ``jax._src``) in ppl, in one place.

ppl is tested against the JAX range pinned in ``pyproject.toml``; when JAX
moves these names, this is the only file to change.
"""

from jax.extend.core import (
    ClosedJaxpr,
    Jaxpr,
    Literal,
    Primitive,
    get_opaque_trace_state,
    jaxpr_as_fun,
)
from jax.extend.core.primitives import closed_call_p, cond_p, jit_p, scan_p, select_n_p
from jax.interpreters import ad, batching, mlir
from jax._src.interpreters.partial_eval import dce_jaxpr

__all__ = [
    "ClosedJaxpr",
    "Jaxpr",
    "Literal",
    "Primitive",
    "ad",
    "batching",
    "dce_jaxpr",
    "get_opaque_trace_state",
    "jaxpr_as_fun",
    "mlir",
    "trace_state",
    "JIT_PRIMITIVES",
    "jit_body",
    "cond_p",
    "scan_p",
    "select_n_p",
    "sub_jaxprs",
    "bind_equation",
]

# Nested jit: the primitives whose equation calls a closed jaxpr, inline.
JIT_PRIMITIVES = (jit_p, closed_call_p)


def jit_body(eqn):
    """The ``ClosedJaxpr`` a nested-jit equation calls."""
    params = eqn.params
    return params["jaxpr"] if "jaxpr" in params else params["call_jaxpr"]


def trace_state():
    """An opaque token that changes whenever JAX starts a new trace (jit, vmap,
    grad, lax.cond/scan/while bodies...). Compared by equality."""
    return get_opaque_trace_state(convention="flax")


def sub_jaxprs(params):
    """The jaxprs inside an equation's parameters (cond branches, scan bodies...)."""
    from jax.extend.core import jaxprs_in_params

    return list(jaxprs_in_params(params))


def bind_equation(eqn, invals):
    """Evaluate one equation on values, as ``jax.core.eval_jaxpr`` does
    (higher-order primitives such as ``custom_jvp_call`` rebuild their params)."""
    out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return out if eqn.primitive.multiple_results else [out]
