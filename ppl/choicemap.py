"""Choice maps (nested dicts of arrays) and selections of addresses.

A choice map is an ordinary pytree: ``{"coeffs": f32[3], "ys": {"y": f32[50]}}``.
Addresses are written as tuples (``("ys", "y")``) or as strings with ``/``
between levels (``"ys/y"``).
"""

from typing import Any

import jax

from ppl.errors import AddressError, format_address

__all__ = [
    "Selection",
    "select",
    "select_all",
    "flatten",
    "unflatten",
    "merge",
    "filter_choices",
    "get",
    "as_path",
    "by_path",
    "from_paths",
    "to_arrays",
]


def as_path(address):
    """``"a/b"`` or ``("a", "b")`` -> ``("a", "b")``."""
    if isinstance(address, str):
        return tuple(address.split("/"))
    return tuple(address)


class Selection:
    """A set of addresses; selecting an address selects everything under it.

    >>> s = select("coeffs", "ys/outlier")
    >>> s.contains(("ys", "outlier")), s.sub("ys").everything, s.sub("coeffs").everything
    (True, False, True)
    """

    __slots__ = ("paths", "everything")

    def __init__(self, paths=(), everything=False):
        paths = frozenset(as_path(p) for p in paths)
        self.everything = everything or () in paths
        self.paths = frozenset() if self.everything else paths  # one form for "everything", for == and hash

    def sub(self, name):
        if self.everything:
            return self
        rest = [p[1:] for p in self.paths if p[0] == name]
        return Selection(rest)

    def contains(self, path):
        path = as_path(path)
        return self.everything or any(path[: len(p)] == p for p in self.paths)

    def __bool__(self):
        return self.everything or bool(self.paths)

    def __eq__(self, other):
        return isinstance(other, Selection) and (self.paths, self.everything) == (other.paths, other.everything)

    def __hash__(self):
        return hash((self.paths, self.everything))

    def __repr__(self):
        if self.everything:
            return "select_all()"
        return f"select({', '.join(repr(format_address(p)) for p in sorted(self.paths))})"


def select(*addresses):
    """The selection of the given addresses (strings ``"a/b"`` or tuples)."""
    return Selection(addresses)


def select_all():
    """The selection of every address."""
    return Selection(everything=True)


NONE = Selection()


def _is_leaf(x):
    return not isinstance(x, dict)


def flatten(choices) -> dict:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``."""
    out = {}

    def walk(node, path):
        if _is_leaf(node):
            out[format_address(path)] = node
            return
        for name, child in node.items():
            walk(child, path + (name,))

    walk(choices, ())
    return out


def unflatten(flat) -> dict:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict = {}
    for address, value in flat.items():
        *parents, last = as_path(address)
        node = out
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise AddressError(f"address {address!r} nests under a leaf")
        node[last] = value
    return out


def merge(*choice_maps) -> dict:
    """Union of choice maps; an address given twice is an error."""
    flat: dict = {}
    for choices in choice_maps:
        for address, value in flatten(choices or {}).items():
            if address in flat:
                raise AddressError(f"address {address!r} appears in more than one choice map being merged")
            flat[address] = value
    return unflatten(flat)


def filter_choices(choices, selection: Selection) -> dict:
    """The part of ``choices`` whose addresses are in ``selection``."""
    return unflatten({a: v for a, v in flatten(choices).items() if selection.contains(a)})


def get(choices, address) -> Any:
    """The value (or sub-map) at ``address``, or ``None`` when absent."""
    node = choices
    for name in as_path(address):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def tree_paths(tree):
    """``[(path tuple, leaf)]`` for a nested-dict pytree."""
    out = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out.append((tuple(k.key for k in key_path), leaf))
    return out


def by_path(tree) -> dict:
    """``{path tuple: leaf}`` of a choice map; a bare value has the path ``()``."""
    return dict(tree_paths(tree)) if isinstance(tree, dict) else {(): tree}


def from_paths(flat) -> dict:
    """The inverse of ``by_path``."""
    if () in flat:
        return flat[()]
    out = {}
    for path, value in flat.items():
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return out


def to_arrays(choices):
    """Python numbers in a choice map become arrays: observed values are data,
    traced so that new values do not recompile (Python *arguments*, by
    contrast, stay static). Anything else is left for the checks at each choice.

    >>> to_arrays({"y": 1.5})["y"].shape
    ()
    """
    number = lambda leaf: isinstance(leaf, (bool, int, float, complex))
    return jax.tree.map(lambda leaf: jax.numpy.asarray(leaf) if number(leaf) else leaf, choices)
