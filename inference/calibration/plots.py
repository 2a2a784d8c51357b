"""Plots of the calibration results, saved as PNG. matplotlib is an
optional (dev) dependency: it is imported here, when a plot is asked for."""

import numpy as np

__all__ = ["plot_sbc", "plot_tarp", "plot_geweke"]

MAX_PANELS = 16  # more scalars than this are drawn in one panel


def _figure(axes, num_panels=1):
    """``(figure, [axes])``: the given axes, or a new figure (no pyplot: no GUI backend needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("calibration plots need matplotlib: pip install 'ppl[dev]' (or pip install matplotlib)") from error
    if axes is not None:
        axes = list(np.ravel(axes))
        return axes[0].figure, axes
    columns = min(num_panels, 4)
    rows = -(-num_panels // columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows), layout="constrained")
    return figure, list(np.ravel(figure.subplots(rows, columns, squeeze=False)))[:num_panels]


def _save(figure, path):
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def _band(ax, band, color="0.8", label=None):
    ax.fill_between(band.probabilities, band.lower - band.probabilities, band.upper - band.probabilities,
                    step="mid", color=color, label=label, linewidth=0)  # fmt: skip
    ax.axhline(0.0, color="0.4", linewidth=0.8)


def plot_sbc(result, path=None, axes=None, overlay=None, title=None):
    """Per latent scalar, the ECDF of the ranks minus the uniform CDF, against
    the fractional rank, inside the simultaneous band (grey): a line leaving the
    band fails (drawn thick). Above zero: too many small ranks, the posterior
    sits too high; a hump in the middle: too wide; a dip: too narrow. ``axes``: one Axes (every scalar overlaid) or one per scalar;
    ``overlay`` draws them all in one panel (default when more than
    ``MAX_PANELS``). Saved to ``path`` (PNG) when given; returns the figure."""
    num = len(result.names)
    overlay = (num > MAX_PANELS or (axes is not None and np.size(axes) == 1)) if overlay is None else overlay
    figure, panels = _figure(axes, 1 if overlay else num)
    ecdf = _ecdf(result.ranks, result.band)
    difference = ecdf - result.band.probabilities[:, None]
    for i, name in enumerate(result.names):
        ax = panels[0] if overlay else panels[i]
        if i == 0 or not overlay:
            _band(ax, result.band, label=f"{100 * (1 - result.band.alpha):.3g}% band")
        failed = not result.in_band[i]  # drawn thick (colours are the scalars')
        ax.step(result.band.probabilities, difference[:, i], where="mid", linewidth=2.6 if failed else 1.1,
                label=f"{name} (FAIL)" if failed else name, zorder=3 if failed else 2)  # fmt: skip
        if not overlay:
            ax.set_title(f"{name}: {'pass' if result.in_band[i] else 'FAIL'}", fontsize=9)
    for ax in panels:
        ax.set_xlabel("fractional rank")
        ax.set_xlim(0, 1)
    panels[0].set_ylabel("ECDF - uniform")
    if overlay:
        panels[0].set_title(title or f"SBC: {'passed' if result.passed else 'FAILED'}", fontsize=10)
        if num <= 8:
            panels[0].legend(fontsize=7, loc="upper right")
    return _save(figure, path)


def plot_tarp(result, path=None, ax=None, title=None):
    """Expected coverage against credibility level: the diagonal (a right
    posterior), the ECP curve with its bootstrap band (blue) and the
    simultaneous band of the test (grey lines). Over the diagonal: the posterior
    is too wide; under it: too narrow or biased. Saved to ``path`` when given."""
    figure, (ax,) = _figure(ax)
    a = result.credibility
    ax.plot([0, 1], [0, 1], color="0.4", linewidth=0.8)
    ax.plot(a, result.band.lower, color="0.6", linestyle="--", linewidth=0.8, label=f"{100 * (1 - result.alpha):.3g}% band")
    ax.plot(a, result.band.upper, color="0.6", linestyle="--", linewidth=0.8)
    ax.fill_between(a, result.bootstrap_lower, result.bootstrap_upper, color="C0", alpha=0.3, linewidth=0, label="bootstrap")
    ax.plot(a, result.ecp, color="C0" if result.passed else "C3", linewidth=1.4, label="ECP")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.set_title(title or f"TARP: {'passed' if result.passed else 'FAILED'}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(figure, path)


def plot_geweke(result, path=None, ax=None, title=None):
    """The z-score of each statistic (successive minus marginal mean), with the
    Bonferroni thresholds of the test (dashed). Saved to ``path`` when given."""
    from scipy.special import ndtri

    figure, (ax,) = _figure(ax)
    threshold = -ndtri(result.alpha / len(result.names) / 2)
    positions = np.arange(len(result.names))
    colors = ["C0" if abs(z) < threshold else "C3" for z in result.z_scores]
    ax.barh(positions, result.z_scores, color=colors)
    for side in (-threshold, threshold):
        ax.axvline(side, color="0.4", linestyle="--", linewidth=0.8)
    ax.set_yticks(positions, result.names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("z-score")
    ax.set_title(title or f"Geweke: {'passed' if result.passed else 'FAILED'}", fontsize=10)
    return _save(figure, path)


def _ecdf(ranks, band):
    from ppl.inference.calibration.ecdf_bands import ecdf_counts

    return ecdf_counts(np.asarray(ranks).reshape(len(ranks), -1), band) / band.num_ranks
