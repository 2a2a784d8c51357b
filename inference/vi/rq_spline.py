"""The monotone rational-quadratic spline of neural spline flows (Durkan et
al., 2019), elementwise: ``K`` bins on ``[-bound, bound]``, the identity
outside (linear tails, slope 1 at the boundary knots, so the map is C1).

Each element has its own ``3K - 1`` unnormalised parameters: ``K`` bin
widths, ``K`` bin heights (softmax, with a floor) and ``K - 1`` interior knot
slopes (softplus, with a floor).
"""

import jax
import jax.numpy as jnp

__all__ = ["rq_spline", "num_spline_parameters"]

MIN_BIN = 1e-3
MIN_SLOPE = 1e-3


def num_spline_parameters(num_bins):
    return 3 * num_bins - 1


def rq_spline(x, raw, bound, inverse=False):
    """``(y, log |dy/dx|)`` elementwise (``inverse``: ``(x, log |dx/dy|)`` of
    ``y = x``'s argument). ``raw`` has shape ``x.shape + (3K - 1,)``.

    >>> raw = jnp.zeros((2, num_spline_parameters(4)))
    >>> y, log_det = rq_spline(jnp.array([0.3, 5.0]), raw, 3.0)
    >>> back, _ = rq_spline(y, raw, 3.0, inverse=True)
    >>> bool(jnp.allclose(back, jnp.array([0.3, 5.0]), atol=1e-5))
    True
    """
    num_bins = (raw.shape[-1] + 1) // 3
    knots_x, knots_y, slopes = _knots(raw, num_bins, bound)
    inside = jnp.abs(x) < bound
    clipped = jnp.clip(x, -bound, bound)
    knots_in = knots_y if inverse else knots_x
    index = jnp.clip(jnp.sum(clipped[..., None] >= knots_in[..., 1:-1], axis=-1), 0, num_bins - 1)
    pick = lambda table: jnp.take_along_axis(table, index[..., None], axis=-1)[..., 0]
    x_k, y_k = pick(knots_x), pick(knots_y)
    width, height = pick(knots_x[..., 1:]) - x_k, pick(knots_y[..., 1:]) - y_k
    slope_k, slope_k1 = pick(slopes), pick(slopes[..., 1:])
    ratio = height / width
    if inverse:
        xi = _inverse_position(clipped - y_k, height, ratio, slope_k, slope_k1)
        out = x_k + xi * width
    else:
        xi = (clipped - x_k) / width
        out = y_k + height * (ratio * xi**2 + slope_k * xi * (1 - xi)) / _denominator(xi, ratio, slope_k, slope_k1)
    log_slope = _log_slope(xi, ratio, slope_k, slope_k1)
    log_det = -log_slope if inverse else log_slope
    return jnp.where(inside, out, x), jnp.where(inside, log_det, 0.0)


def _knots(raw, num_bins, bound):
    widths = _bins(raw[..., :num_bins], num_bins)
    heights = _bins(raw[..., num_bins : 2 * num_bins], num_bins)
    interior = MIN_SLOPE + jax.nn.softplus(raw[..., 2 * num_bins :] + _SOFTPLUS_INVERSE_OF_ONE)  # 1 at raw = 0
    ones = jnp.ones(raw.shape[:-1] + (1,), raw.dtype)
    slopes = jnp.concatenate([ones, interior, ones], axis=-1)
    return _cumulative(widths, bound), _cumulative(heights, bound), slopes


_SOFTPLUS_INVERSE_OF_ONE = 0.5413248546129181  # log(e - 1): softplus of it is 1


def _bins(raw, num_bins):
    return MIN_BIN + (1 - MIN_BIN * num_bins) * jax.nn.softmax(raw, axis=-1)


def _cumulative(sizes, bound):
    edges = jnp.cumsum(sizes, axis=-1) * 2 * bound - bound
    edges = edges.at[..., -1].set(bound)  # exactly the boundary, whatever the rounding
    return jnp.concatenate([jnp.full(sizes.shape[:-1] + (1,), -bound, sizes.dtype), edges], axis=-1)


def _denominator(xi, ratio, slope_k, slope_k1):
    return ratio + (slope_k1 + slope_k - 2 * ratio) * xi * (1 - xi)


def _log_slope(xi, ratio, slope_k, slope_k1):
    numerator = ratio**2 * (slope_k1 * xi**2 + 2 * ratio * xi * (1 - xi) + slope_k * (1 - xi) ** 2)
    return jnp.log(numerator) - 2 * jnp.log(_denominator(xi, ratio, slope_k, slope_k1))


def _inverse_position(offset, height, ratio, slope_k, slope_k1):
    """The root in [0, 1] of the quadratic that inverts one bin (the stable form)."""
    curvature = slope_k1 + slope_k - 2 * ratio
    a = height * (ratio - slope_k) + offset * curvature
    b = height * slope_k - offset * curvature
    c = -ratio * offset
    discriminant = jnp.maximum(b**2 - 4 * a * c, 0.0)
    return jnp.clip(2 * c / (-b - jnp.sqrt(discriminant)), 0.0, 1.0)
