"""Which of a model's choices are data: ``observed`` as a selection, a list
of addresses or a choice map, checked against a simulated choice map and
used to split it into latents and observations."""


import jax.numpy as jnp

from ppl.choicemap import Selection, as_path, by_path, from_paths, tree_paths
from ppl.errors import AddressError, did_you_mean, format_address
from ppl.inference.summary_table import _row_names

__all__ = ["as_observed_selection", "split_choices", "LatentLayout"]


def as_observed_selection(observed):
    """A ``ppl.Selection`` from ``observed``: a selection, an address
    (``"ys/y"`` or a tuple of names), a list of addresses, or a choice map
    (a dict: its leaves' addresses).

    >>> as_observed_selection({"ys": {"y": 0.0}, "z": 1.0}) == ppl.select("ys/y", "z")
    True
    """
    if isinstance(observed, Selection):
        selection = observed
    elif isinstance(observed, dict):
        selection = Selection([path for path, _ in tree_paths(observed)])
    elif isinstance(observed, str) or (isinstance(observed, tuple) and observed and all(isinstance(a, str) for a in observed)):
        selection = Selection([observed])
    elif isinstance(observed, (list, tuple)):
        selection = Selection([as_path(a) for a in observed])
    else:
        raise TypeError(
            f"observed={observed!r}: name the data addresses with a ppl.Selection, an address, a list of "
            "addresses or a choice map"
        )
    if selection.everything:
        raise ValueError("observed selects every address: nothing would be left latent to calibrate")
    if not selection.paths:
        raise ValueError("observed selects no address: name the model's data addresses")
    return selection


def split_choices(choices, selection):
    """``(latents, observations)``: the choice map cut by ``selection``, after
    checking that each selected address is a choice (or a sub-map) of the model
    and that some choice is left latent."""
    paths = list(by_path(choices)) if isinstance(choices, dict) else [()]
    for selected in sorted(selection.paths):
        if not any(path[: len(selected)] == selected for path in paths):
            valid = [format_address(p) for p in paths]
            hint = did_you_mean(format_address(selected), valid)
            raise AddressError(
                f"observed names {format_address(selected)!r}{hint}, which the model never samples; "
                f"the model's choices: {', '.join(map(repr, valid))}"
            )
    flat = by_path(choices)
    latents = {p: v for p, v in flat.items() if not selection.contains(p)}
    observations = {p: v for p, v in flat.items() if selection.contains(p)}
    if not latents:
        raise ValueError(f"observed ({selection}) covers every choice of the model: nothing is left latent to calibrate")
    return from_paths(latents), from_paths(observations)


class LatentLayout:
    """The latent choices' addresses and shapes (one simulation's), and the
    names of their scalars in order: ``coeffs[0]``, ``coeffs[1]``, ``mu``.
    ``matrix(latents, leading)`` flattens a choice map with ``leading`` axes
    into ``(*leading, scalars)``. Hashable, so compiled programs that use it
    are cached.

    >>> layout = LatentLayout({"coeffs": jnp.zeros(2), "mu": jnp.zeros(())})
    >>> layout.names, layout.size
    (['coeffs[0]', 'coeffs[1]', 'mu'], 3)
    """

    def __init__(self, latents):
        flat = by_path(latents)
        self.paths = tuple(flat)
        self.shapes = tuple(tuple(jnp.shape(v)) for v in flat.values())
        self.names = [n for p, s in zip(self.paths, self.shapes) for n in _row_names(format_address(p), s)]
        self.size = len(self.names)

    def __eq__(self, other):
        return isinstance(other, LatentLayout) and (self.paths, self.shapes) == (other.paths, other.shapes)

    def __hash__(self):
        return hash((self.paths, self.shapes))

    def matrix(self, latents, leading):
        flat = by_path(latents)
        dtype = jnp.result_type(*[jnp.promote_types(jnp.result_type(flat[p]), jnp.result_type(float)) for p in self.paths])
        return jnp.concatenate([jnp.reshape(flat[p], leading + (-1,)).astype(dtype) for p in self.paths], axis=-1)

    def describe(self):
        return ", ".join(f"{format_address(p)} {list(s)}" for p, s in zip(self.paths, self.shapes))
