"""``Summary``: statistics per scalar of a set of draws (one row each, one
column per statistic) and factual warnings about the run that made them.
It prints as an aligned text table (``str``, ``repr``) and as an HTML table
in Jupyter. ``ppl.inference.diagnostics.summary`` builds one (and
``weighted_summary`` for weighted draws), from the columns made here: one per
scalar of the draws, with its row name.
"""

import html
import math

import jax.numpy as jnp
import numpy as np

import ppl

__all__ = ["Summary"]


class Summary:
    """A table of statistics: ``names`` (one per row: ``mu``, ``theta[3]``,
    ``ys/y[0, 1]``), ``table`` (column -> NumPy array, one entry per row),
    ``warnings`` (a list of strings), ``num_divergences`` (an int, or
    ``None`` where the draws record none) and ``header`` (a line that says
    what the draws are, or ``None``). Numbers print to about 3 significant
    digits; ESS columns as integers, R-hat with 3 decimals.

    >>> s = Summary(["mu", "theta[0]"], {"mean": np.array([0.1234, -20.0]), "ess_bulk": np.array([950.3, 1200.0])},
    ...             warnings=["an example warning"])
    >>> print(s)
               mean  ess_bulk
    mu        0.123       950
    theta[0]  -20.0      1200
    warning: an example warning
    >>> s.table["mean"][1]
    np.float64(-20.0)
    """

    __slots__ = ("names", "table", "warnings", "num_divergences", "header")

    def __init__(self, names, table, warnings=(), num_divergences=None, header=None):
        names = [str(name) for name in names]
        table = {str(column): np.asarray(values) for column, values in table.items()}
        for column, values in table.items():
            if values.shape != (len(names),):
                raise ValueError(f"Summary: column {column!r} has shape {values.shape}, expected ({len(names)},): one entry per name")
        self.names, self.table, self.warnings = names, table, list(warnings)
        self.num_divergences, self.header = num_divergences, header

    def _cells(self):
        """The header row and the body rows, as strings."""
        columns = list(self.table)
        body = [[name] + [_format(self.table[column][i], column) for column in columns] for i, name in enumerate(self.names)]
        return [""] + columns, body

    def __repr__(self):
        head, body = self._cells()
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
        line = lambda row: "  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
        lines = ([self.header] if self.header else []) + [line(head).rstrip()] + [line(row) for row in body]
        return "\n".join(lines + [f"warning: {warning}" for warning in self.warnings])

    __str__ = __repr__

    def _repr_html_(self):
        head, body = self._cells()
        cell = lambda tag, text, align: f'<{tag} style="text-align: {align}">{html.escape(text)}</{tag}>'
        row = lambda cells, tag: "<tr>" + cell(tag, cells[0], "left") + "".join(cell(tag, c, "right") for c in cells[1:]) + "</tr>"
        parts = [f"<p>{html.escape(self.header)}</p>"] if self.header else []
        parts += ["<table>", "<thead>" + row(head, "th") + "</thead>", "<tbody>"] + [row(r, "td") for r in body] + ["</tbody></table>"]
        parts += [f"<p>warning: {html.escape(warning)}</p>" for warning in self.warnings]
        return "\n".join(parts)


def _format(value, column):
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if column.startswith("ess"):
        return f"{value:.0f}"
    if column == "r_hat":
        return f"{value:.3f}"
    return _significant(value)


def _significant(value, digits=3):
    """About ``digits`` significant digits: fixed point between 1e-3 and 1e5, else exponent."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e5:
        return f"{value:.{max(0, digits - 1 - math.floor(math.log10(magnitude)))}f}"
    return f"{value:.{digits - 1}e}"


# ----- text for the rows and warnings (used by diagnostics.summary) -----------------


def _row_names(name, shape):
    return [f"{name}[{', '.join(map(str, index))}]" for index in np.ndindex(*shape)] if shape else [name]


def _flagged(names, mask, what, most=8):
    """A warning naming the scalars in ``mask`` (the first ``most`` of them), or none."""
    flagged = [name for name, bad in zip(names, mask) if bad]
    if not flagged:
        return []
    listed = ", ".join(flagged[:most]) + (f", and {len(flagged) - most} more" if len(flagged) > most else "")
    return [f"{what} for {len(flagged)} of {_count(len(names), 'scalar')}: {listed}"]


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _percent(fraction):
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def _sampler_warnings(stats, shape, max_tree_depth):
    for name in ("diverging", "tree_depth"):  # the stats read here; others may have more axes
        value = stats.get(name)
        if value is not None and np.shape(value) != shape:
            raise ValueError(f"summary: stats[{name!r}] has shape {np.shape(value)}, expected (chains, draws) = {shape}")
    warnings, num_divergences, size = [], None, int(np.prod(shape))
    if "diverging" in stats:
        num_divergences = int(np.sum(np.asarray(stats["diverging"], bool)))
        if num_divergences:
            warnings.append(f"{_count(num_divergences, 'divergent transition')} ({_percent(num_divergences / size)} of {size} draws)")
    if max_tree_depth is not None:
        if "tree_depth" not in stats:
            raise ValueError("summary: max_tree_depth is given but stats has no 'tree_depth'")
        saturated = int(np.sum(np.asarray(stats["tree_depth"]) >= max_tree_depth))
        if saturated:
            warnings.append(
                f"tree depth reached max_tree_depth={max_tree_depth} in {saturated} of {size} draws ({_percent(saturated / size)})"
            )
    return num_divergences, warnings


# ----- draws as columns, one per scalar -------------------------------------------


def _named_leaves(draws):
    flat = ppl.choicemap.flatten(draws) if isinstance(draws, dict) else {"x": draws}
    if not flat:
        raise ValueError("summary: no draws (an empty choice map)")
    return {name: jnp.asarray(leaf) for name, leaf in flat.items()}


def _columns(leaves, leading):
    """Every leaf as ``(*leading, scalars)``, joined along the last axis, and the row names."""
    for name, leaf in leaves.items():
        if leaf.shape[: len(leading)] != leading:
            raise ValueError(f"summary: {name!r} has shape {leaf.shape}; every leaf must start with {leading}")
    dtype = jnp.result_type(*[jnp.promote_types(leaf.dtype, jnp.result_type(float)) for leaf in leaves.values()])
    joined = jnp.concatenate([leaf.reshape(leading + (-1,)).astype(dtype) for leaf in leaves.values()], axis=-1)
    names = [row for name, leaf in leaves.items() for row in _row_names(name, leaf.shape[len(leading) :])]
    return joined, names
