"""Traces: the record of one execution of a generative function."""

import jax
import numpy as np

from ppl.choicemap import flatten

__all__ = ["Trace", "format_trace"]


def _is_static(leaf):
    return not isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.core.Tracer, jax.ShapeDtypeStruct))


def split_static(tree):
    """Split a pytree into its array leaves and a hashable description of the rest
    (Python scalars, strings, callables stay Python values)."""
    leaves, treedef = jax.tree.flatten(tree)
    static = tuple((i, leaf) for i, leaf in enumerate(leaves) if _is_static(leaf))
    dynamic = [leaf for leaf in leaves if not _is_static(leaf)]
    return dynamic, (treedef, static, len(leaves))


def join_static(dynamic, description):
    treedef, static, count = description
    leaves, dynamic, fixed = [None] * count, iter(dynamic), dict(static)
    for i in range(count):
        leaves[i] = fixed[i] if i in fixed else next(dynamic)
    return jax.tree.unflatten(treedef, leaves)


@jax.tree_util.register_pytree_node_class
class Trace:
    """One execution: ``choices`` (nested dict of arrays), ``retval``, ``args``
    and ``log_density`` (log p of every choice and factor).

    A pytree: traces go through ``jax.jit`` and ``jax.vmap``; Python values in
    ``args`` stay Python values. A vectorised trace has a leading axis on every
    array leaf.

    >>> import jax, ppl
    >>> from ppl import dist
    >>> t = ppl.as_gen(dist.Normal(0.0, 1.0)).simulate(jax.random.key(0), ())
    >>> t.choices.shape
    ()
    """

    __slots__ = ("choices", "retval", "args", "log_density")

    def __init__(self, choices, retval, args, log_density):
        self.choices, self.retval, self.args, self.log_density = choices, retval, args, log_density

    def tree_flatten(self):
        dynamic, description = split_static(self.args)
        return (self.choices, self.retval, dynamic, self.log_density), description

    @classmethod
    def tree_unflatten(cls, description, children):
        choices, retval, dynamic, log_density = children
        return cls(choices, retval, join_static(dynamic, description), log_density)

    def __getitem__(self, index):
        """Particle ``index`` of a vectorised trace (arguments are shared)."""
        pick = lambda x: x[index]
        return Trace(jax.tree.map(pick, self.choices), jax.tree.map(pick, self.retval), self.args, self.log_density[index])

    def __repr__(self):
        return format_trace(self)


def _describe(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        return repr(value)
    if isinstance(value, jax.core.Tracer):
        return f"{value.dtype}{list(shape)} (traced)"
    if np.size(value) <= 6:
        return f"{value.dtype}{list(shape)} = {np.array2string(np.asarray(value), precision=4)}"
    return f"{value.dtype}{list(shape)}"


def format_trace(trace) -> str:
    """A readable listing of a trace's choices, log density and return value."""
    lines = [f"Trace(log_density={_describe(trace.log_density)})"]
    choices = trace.choices if isinstance(trace.choices, dict) else {"<value>": trace.choices}
    for address, value in flatten(choices).items():
        lines.append(f"  {address}: {_describe(value)}")
    lines.append(f"  retval: {jax.tree.map(_describe, trace.retval)}")
    return "\n".join(lines)
