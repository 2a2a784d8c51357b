"""Plain-text tables for the calibration results' ``summary()``."""

import math

__all__ = ["text_table", "format_number"]


def text_table(names, columns, header=None, warnings=()):
    """An aligned table: one row per name, ``columns`` a dict of column name ->
    cells (strings); the header line above it, warnings below.

    >>> print(text_table(["mu", "tau"], {"p": ["0.52", "0.001"], "ok": ["pass", "FAIL"]}, header="a check"))
    a check
             p    ok
    mu    0.52  pass
    tau  0.001  FAIL
    """
    head = [""] + list(columns)
    body = [[name] + [columns[c][i] for c in columns] for i, name in enumerate(names)]
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    line = lambda row: " ".join([row[0].ljust(widths[0])] + [cell.rjust(w + 1) for cell, w in zip(row[1:], widths[1:])])
    lines = ([header] if header else []) + [line(head).rstrip()] + [line(row) for row in body]
    return "\n".join(lines + [f"warning: {warning}" for warning in warnings])


def format_number(value, digits=3):
    """About ``digits`` significant digits; fixed point between 1e-3 and 1e5.

    >>> format_number(0.000123), format_number(0.5127), format_number(-2.0)
    ('1.23e-04', '0.513', '-2.00')
    """
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return str(value) if value else "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e5:
        return f"{value:.{max(0, digits - 1 - math.floor(math.log10(magnitude)))}f}"
    return f"{value:.{digits - 1}e}"
