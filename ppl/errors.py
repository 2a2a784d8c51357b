"""Errors ppl raises for bad models and bad input, and the checks behind them."""

import difflib
import inspect

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AddressError",
    "ConstraintError",
    "ControlFlowError",
    "ArgumentCountError",
    "MissingValueError",
    "format_address",
    "check_address_name",
    "unknown_addresses_error",
    "check_constraint_value",
    "control_flow_error",
]


class AddressError(ValueError):
    """An address is used twice, is malformed, or names no choice of the model."""


class ConstraintError(ValueError):
    """A constrained (observed) value has the wrong shape, dtype or support."""


class MissingValueError(AddressError):
    """``assess`` (or another complete scoring) met a choice the choice map gives no value."""


class DiscreteLatentError(TypeError):
    """Discrete latent choices where only continuous ones are allowed
    (the unconstraining transform); ``addresses`` names them (path tuples)."""

    def __init__(self, message, addresses=()):
        super().__init__(message)
        self.addresses = tuple(addresses)


class ArgumentCountError(TypeError):
    """A generative function was called with arguments its signature does not take."""


class ControlFlowError(RuntimeError):
    """A random choice was made inside JAX control flow ppl cannot see through."""


def format_address(path):
    return "/".join(str(p) for p in path) if path else "<root>"


def check_address_name(name, path):
    if not isinstance(name, str) or not name or "/" in name:
        raise AddressError(
            f"address {name!r} under {format_address(path)!r} is not valid: addresses are "
            "non-empty strings without '/' ('/' separates nested addresses)"
        )


def did_you_mean(name, valid, shown=lambda near: near):
    """``" (did you mean 'a', 'b'?)"`` for the valid names closest to
    ``name`` (each passed through ``shown``), or ``""`` when none is close.

    >>> did_you_mean("coefs", ["coeffs", "ys"])
    " (did you mean 'coeffs'?)"
    """
    near = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(shown(n)) for n in near)}?)" if near else ""


def unknown_addresses_error(unknown, valid, path, what="constraints"):
    lines = []
    for name in sorted(unknown):
        hint = did_you_mean(name, valid, lambda n: format_address(path + (n,)))
        lines.append(f"  {format_address(path + (name,))!r}{hint}")
    valid_list = ", ".join(repr(format_address(path + (n,))) for n in sorted(valid)) or "none"
    return AddressError(
        f"{what} name addresses the model never visits:\n" + "\n".join(lines) + f"\nvalid addresses here: {valid_list}"
    )


def check_constraint_value(value, distribution, path):
    """Shape and dtype checks at trace time; returns the value as an array."""
    address = format_address(path)
    if not hasattr(value, "shape"):
        try:
            value = jnp.asarray(value)
        except TypeError as error:
            raise ConstraintError(f"address {address!r}: constrained value {value!r} is not an array") from error
    expected = tuple(distribution.batch_shape + distribution.event_shape)
    if tuple(value.shape) != expected:
        raise ConstraintError(
            f"address {address!r}: constrained value has shape {tuple(value.shape)} "
            f"but the choice has shape {expected} (distribution {type(distribution).__name__})"
        )
    kind = np.dtype(value.dtype).kind if not jax.dtypes.issubdtype(value.dtype, jax.dtypes.extended) else "V"
    discrete = getattr(distribution.support, "is_discrete", False)
    if kind not in "biuf" or (kind == "b" and not discrete):
        raise ConstraintError(
            f"address {address!r}: constrained value has dtype {value.dtype}, which a "
            f"{'discrete' if discrete else 'continuous'} {type(distribution).__name__} choice cannot take"
        )
    return value


def check_support(value, support, path):
    """Raise if a concrete constrained value lies outside ``support``."""
    with jax.ensure_compile_time_eval():  # concrete even when a user's jit closes over it
        inside = np.asarray(support.check(value))
    if inside.all():
        return
    value = np.asarray(value)
    if inside.shape != value.shape:  # event constraints report per batch element
        inside = np.broadcast_to(inside.reshape(inside.shape + (1,) * (value.ndim - inside.ndim)), value.shape)
    index = tuple(int(i) for i in np.argwhere(~inside)[0])
    shown = value[index] if index else value
    where = f" at index {index}" if index else ""
    raise ConstraintError(
        f"address {format_address(path)!r}: observed value {shown}{where} is outside the support "
        f"of the distribution ({support})"
    )


# JAX entry points that start a new trace, by the name of their frame.
_JAX_FRAMES = {
    "while_loop": ("jax.lax.while_loop", "gf.scan(length) for a fixed number of steps"),
    "fori_loop": ("jax.lax.fori_loop", "gf.scan(length)"),
    "scan": ("jax.lax.scan", "gf.scan(length)"),
    "map": ("jax.lax.map", "gf.vmap(...) or gf.scan(length)"),
    "cond": ("jax.lax.cond", "ppl.cond(pred, true_gf, false_gf, *args)"),
    "switch": ("jax.lax.switch", "ppl.switch(index, branches, *args)"),
    "vmap_f": ("jax.vmap", "gf.vmap(in_axes=...) or gf.repeat(n)"),
    "grad_f": ("jax.grad", "differentiating the GFI call from outside the model"),
    "value_and_grad_f": ("jax.value_and_grad", "differentiating the GFI call from outside the model"),
    "checkpoint": ("jax.checkpoint", "a checkpoint around deterministic code only"),
    "remat": ("jax.checkpoint", "a checkpoint around deterministic code only"),
    "cache_miss": ("jax.jit", "jitting the GFI call (e.g. jax.jit(model.simulate)) instead"),
    "custom_vjp_call": ("jax.custom_vjp", "custom derivatives around deterministic code only"),
}


def control_flow_error(address):
    """The error for a random choice made inside a JAX transformation that was
    started inside the model, naming the outermost such transformation."""
    found = None
    for frame in inspect.stack(context=0):
        if "/jax/" in frame.filename.replace("\\", "/") and frame.function in _JAX_FRAMES:
            name, instead = _JAX_FRAMES[frame.function]
            if name:
                found = (name, instead)
        if frame.filename.endswith(("ppl/gen.py",)) and frame.function == "_edit":
            break
    name, instead = found or ("a JAX transformation", "ppl's combinators (gf.vmap, gf.scan, ppl.cond)")
    return ControlFlowError(
        f"random choice {address!r} is made inside {name}, which ppl cannot see through: "
        f"use {instead}. JAX control flow is fine around deterministic code inside a model."
    )
