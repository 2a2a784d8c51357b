"""Traces: the record of one execution of a generative function."""

import jax
import numpy as np

from ppl.choicemap import flatten

__all__ = ["Trace", "format_trace"]


def is_static(leaf):
    return not isinstance(leaf, (jax.Array, np.ndarray, np.generic, jax.core.Tracer, jax.ShapeDtypeStruct))


def split_static(tree):
    """Split a pytree into its array leaves and a hashable description of the rest
    (Python scalars, strings, callables stay Python values)."""
    leaves, treedef = jax.tree.flatten(tree)
    static = tuple((i, leaf) for i, leaf in enumerate(leaves) if is_static(leaf))
    dynamic = [leaf for leaf in leaves if not is_static(leaf)]
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
    array leaf. Traces made by the GFI methods also keep ``ppl.sites.Sites``
    (internal, ``trace._sites``; ``None`` in a trace built by hand or by
    importance sampling), so that ``update`` and ``regenerate`` run the model once.

    >>> import jax, ppl
    >>> from ppl import dist
    >>> t = ppl.as_gen(dist.Normal(0.0, 1.0)).simulate(jax.random.key(0), ())
    >>> t.choices.shape
    ()
    """

    __slots__ = ("choices", "retval", "args", "log_density", "_sites")

    def __init__(self, choices, retval, args, log_density, sites=None):
        self.choices, self.retval, self.args, self.log_density = choices, retval, args, log_density
        self._sites = sites  # internal: Sites or None

    def tree_flatten(self):
        dynamic, description = split_static(self.args)
        site_arrays, site_description = split_static(self._sites)
        return (self.choices, self.retval, dynamic, self.log_density, site_arrays), (description, site_description)

    @classmethod
    def tree_unflatten(cls, descriptions, children):
        choices, retval, dynamic, log_density, site_arrays = children
        description, site_description = descriptions
        sites = join_static(site_arrays, site_description)
        return cls(choices, retval, join_static(dynamic, description), log_density, sites)

    def __getitem__(self, index):
        """Particle ``index`` of a vectorised trace (arguments are shared)."""
        pick = lambda x: x[index] if not is_static(x) else x
        choices, retval, sites = (jax.tree.map(pick, tree) for tree in (self.choices, self.retval, self._sites))
        return Trace(choices, retval, self.args, self.log_density[index], sites)

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
