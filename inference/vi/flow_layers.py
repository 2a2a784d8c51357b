"""Flow layers: invertible maps of R^d with tractable Jacobians, as flax nnx
modules. Planar and radial (Rezende and Mohamed, 2015), affine coupling
(RealNVP, Dinh et al., 2017), rational-quadratic spline coupling (Durkan et
al., 2019), masked autoregressive (MAF, Papamakarios et al., 2017) and
inverse autoregressive (IAF, Kingma et al., 2016; these two, with their
masked network, in ``flow_autoregressive.py``).

Every layer maps one vector ``x`` (shape ``(d,)``) and, for an amortised
flow, a ``context`` vector (``None`` otherwise):

- ``forward(x, context) -> (y, log |det dy/dx|)``: the sampling direction;
- ``inverse(y, context) -> (x, log |det dx/dy|)``: the density direction;
- ``score_forward(x, y, score, context)``: given the score of the density
  before the layer at ``x`` (grad_x log q(x)), the score after it at ``y``,
  grad_y log q(y) = J^-T (score - grad_x log |det J|). This is the forward
  recursion of fast path gradients (Vaitl et al., 2024): by default one
  vector-Jacobian product through ``inverse`` (the conditioner's forward
  pass there repeats the one of ``forward`` on the same input, and XLA
  computes it once); planar and radial layers use their closed forms.
- ``score_inverse(x, y, score, context)``: the same recursion run along the
  inverse, for maximum-likelihood path gradients.

Conditioned layers (coupling, autoregressive) start as the identity: their
conditioners' last layers are zero. A layer is built by ``Flow`` as
``Layer(dimension, index, context_size, rngs)``; pass options through
``functools.partial`` (``partial(SplineCoupling, num_bins=8)``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ppl.inference.vi.rq_spline import num_spline_parameters, rq_spline

__all__ = [
    "Planar",
    "Radial",
    "AffineCoupling",
    "SplineCoupling",
    "Conditioner",
]


def _float():
    return jnp.result_type(float)  # float64 under jax_enable_x64


class Layer(nnx.Module):
    def score_forward(self, x, y, score, context=None):
        _, pullback = jax.vjp(lambda v: self.inverse(v, context), y)
        return pullback((score, jnp.ones((), y.dtype)))[0]

    def score_inverse(self, x, y, score, context=None):
        """The other direction: given grad_y f(y) of a density f at ``y``, the
        gradient at ``x`` of the pulled-back density f(T(x)) |det J(x)|:
        J^T score + grad_x log |det J| (one vector-Jacobian product through
        ``forward``, whose conditioner pass repeats the inverse's)."""
        _, pullback = jax.vjp(lambda v: self.forward(v, context), x)
        return pullback((score, jnp.ones((), x.dtype)))[0]


# ----- planar and radial (Rezende and Mohamed, 2015) -------------------------


class Planar(Layer):
    """y = x + u' tanh(w . x + b), with u' the closest u making it invertible
    (w . u' >= -1). No closed-form inverse: ``inverse`` solves the scalar
    equation for w . x by safeguarded Newton steps."""

    NEWTON_STEPS = 30

    def __init__(self, dimension, index=0, context_size=0, *, rngs):
        self.u = nnx.Param(0.01 * jax.random.normal(rngs.params(), (dimension,), _float()))
        self.w = nnx.Param(0.01 * jax.random.normal(rngs.params(), (dimension,), _float()))
        self.b = nnx.Param(jnp.zeros((), _float()))

    def _parts(self):
        u, w = self.u[...], self.w[...]
        wu = jnp.dot(w, u)
        u_hat = u + (jax.nn.softplus(wu) - 1.0 - wu) * w / jnp.dot(w, w)
        return u_hat, w, self.b[...]

    def forward(self, x, context=None):
        u, w, b = self._parts()
        h = jnp.tanh(jnp.dot(w, x) + b)
        return x + u * h, jnp.log(jnp.abs(1.0 + (1.0 - h**2) * jnp.dot(w, u)))

    def inverse(self, y, context=None):
        u, w, b = self._parts()
        target, wu = jnp.dot(w, y), jnp.dot(w, u)
        # alpha = w . x solves alpha + wu tanh(alpha + b) = w . y (increasing, since wu >= -1)
        excess = lambda a: a + wu * jnp.tanh(a + b) - target
        low, high = target - jnp.abs(wu), target + jnp.abs(wu)

        def newton(_, state):
            a, low, high = state
            f = excess(a)
            low, high = jnp.where(f < 0, a, low), jnp.where(f < 0, high, a)
            step = a - f / (1.0 + wu * (1.0 - jnp.tanh(a + b) ** 2))
            a = jnp.where((step > low) & (step < high), step, 0.5 * (low + high))  # else bisect
            return a, low, high

        alpha = jax.lax.fori_loop(0, self.NEWTON_STEPS, newton, (target, low, high))[0]
        x = y - u * jnp.tanh(alpha + b)
        return x, -self.forward(x, context)[1]

    def score_forward(self, x, y, score, context=None):
        u, w, b = self._parts()
        h = jnp.tanh(jnp.dot(w, x) + b)
        slope, wu = 1.0 - h**2, jnp.dot(w, u)
        det = 1.0 + slope * wu
        v = score - (-2.0 * h * slope * wu / det) * w  # minus grad_x log |det|
        return v - w * slope * jnp.dot(u, v) / det  # J^-T v by Sherman-Morrison


class Radial(Layer):
    """y = x + beta (x - x0) / (alpha + |x - x0|), with alpha > 0 and
    beta >= -alpha (invertible); the inverse is closed form."""

    def __init__(self, dimension, index=0, context_size=0, *, rngs):
        self.center = nnx.Param(0.1 * jax.random.normal(rngs.params(), (dimension,), _float()))
        self.raw_alpha = nnx.Param(jnp.zeros((), _float()))
        self.raw_beta = nnx.Param(jnp.zeros((), _float()))

    def _parts(self):
        alpha = jax.nn.softplus(self.raw_alpha[...])
        return self.center[...], alpha, -alpha + jax.nn.softplus(self.raw_beta[...])

    def forward(self, x, context=None):
        center, alpha, beta = self._parts()
        r = jnp.linalg.norm(x - center)
        h = 1.0 / (alpha + r)
        log_det = (x.shape[-1] - 1) * jnp.log1p(beta * h) + jnp.log1p(beta * h - beta * r * h**2)
        return x + beta * h * (x - center), log_det

    def inverse(self, y, context=None):
        center, alpha, beta = self._parts()
        r_y = jnp.linalg.norm(y - center)
        # r (1 + beta / (alpha + r)) = r_y: the positive root of a quadratic in r = |x - x0|
        p = alpha + beta - r_y
        r = 0.5 * (-p + jnp.sqrt(p**2 + 4.0 * alpha * r_y))
        x = center + (y - center) / (1.0 + beta / (alpha + r))
        return x, -self.forward(x, context)[1]

    def score_forward(self, x, y, score, context=None):
        # J = a I + c e e^T (e the unit vector from x0 to x), inverted by Sherman-Morrison;
        # log |det J| = (d - 1) log a + log (a + c) depends on x through r = |x - x0| only.
        center, alpha, beta = self._parts()
        r = jnp.linalg.norm(x - center)
        e = (x - center) / r
        a, a_plus_c = 1.0 + beta / (alpha + r), 1.0 + beta * alpha / (alpha + r) ** 2
        dlog_det_dr = (x.shape[-1] - 1) * (-beta / (alpha + r) ** 2) / a - 2 * beta * alpha / (alpha + r) ** 3 / a_plus_c
        v = score - dlog_det_dr * e
        return (v - (a_plus_c - a) / a_plus_c * e * jnp.dot(e, v)) / a


# ----- conditioners ------------------------------------------------------------


class Conditioner(nnx.Module):
    """An MLP (tanh hidden layers) whose last layer starts at zero."""

    def __init__(self, in_size, out_size, hidden_sizes, *, rngs):
        sizes = (max(in_size, 1),) + tuple(hidden_sizes)
        dtype = _float()
        self.hidden = nnx.List([nnx.Linear(a, b, param_dtype=dtype, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        zeros = nnx.initializers.zeros
        self.out = nnx.Linear(sizes[-1], out_size, kernel_init=zeros, bias_init=zeros, param_dtype=dtype, rngs=rngs)

    def __call__(self, inputs):
        if inputs.shape[-1] == 0:  # nothing to condition on: the parameters are learned constants
            inputs = jnp.zeros(inputs.shape[:-1] + (1,), inputs.dtype)
        for layer in self.hidden:
            inputs = jnp.tanh(layer(inputs))
        return self.out(inputs)


def _coupling_mask(dimension, index):
    """Which coordinates layer ``index`` keeps: alternately the even and the
    odd ones, then the first and the second half, and so on, so that after
    four layers every coordinate has been moved given every other."""
    positions = np.arange(dimension)
    kept = positions % 2 == 0 if (index // 2) % 2 == 0 else positions < (dimension + 1) // 2
    return kept if index % 2 == 0 else ~kept


def _with_context(inputs, context):
    return inputs if context is None else jnp.concatenate([inputs, context], axis=-1)


class _Coupling(Layer):
    """Transform half the coordinates elementwise, with parameters read off
    the other half (which alternates with ``index``) and the context."""

    def __init__(self, dimension, index, context_size, hidden_sizes, params_per_element, rngs):
        kept = _coupling_mask(dimension, index)
        self.kept, self.moved = tuple(np.flatnonzero(kept)), tuple(np.flatnonzero(~kept))
        self.params_per_element = params_per_element
        out_size = len(self.moved) * params_per_element
        self.conditioner = Conditioner(len(self.kept) + context_size, out_size, hidden_sizes, rngs=rngs)

    def _split(self, x, context):
        kept, moved = x[np.array(self.kept, int)], x[np.array(self.moved, int)]
        raw = self.conditioner(_with_context(kept, context)).reshape(len(self.moved), self.params_per_element)
        return moved, raw

    def _join(self, x, moved):
        return x.at[np.array(self.moved, int)].set(moved)

    def forward(self, x, context=None):
        moved, raw = self._split(x, context)
        moved, log_det = self.elementwise(moved, raw, inverse=False)
        return self._join(x, moved), jnp.sum(log_det)

    def inverse(self, y, context=None):
        moved, raw = self._split(y, context)  # the kept half is unchanged: same parameters
        moved, log_det = self.elementwise(moved, raw, inverse=True)
        return self._join(y, moved), jnp.sum(log_det)

    def score_forward(self, x, y, score, context=None):
        """J^-T (score - grad log |det J|) without the elementwise inverse: with
        J = [[I, 0], [dy_m/dx_k, diag f']], the moved part is
        (score_m - d log f'/dx_m) / f' and the kept part subtracts one
        vector-Jacobian product through the conditioner."""
        kept_index, moved_index = np.array(self.kept, int), np.array(self.moved, int)
        shape = (len(self.moved), self.params_per_element)
        raw, pullback = jax.vjp(lambda k: self.conditioner(_with_context(k, context)).reshape(shape), x[kept_index])
        moved = x[moved_index]
        elementwise = lambda m, r: self.elementwise(m, r, inverse=False)
        # f' and d log f' / dx_m elementwise: a forward-mode pass with unit tangents
        (_, log_slope), (slope_tangent, log_slope_tangent) = jax.jvp(
            lambda m: elementwise(m, raw), (moved,), (jnp.ones_like(moved),))
        moved_score = (score[moved_index] - log_slope_tangent) / slope_tangent
        _, raw_pullback = jax.vjp(lambda r: elementwise(moved, r), raw)
        kept_score = score[kept_index] - pullback(raw_pullback((moved_score, jnp.ones_like(log_slope)))[0])[0]
        return self._join(score, moved_score).at[kept_index].set(kept_score)


class AffineCoupling(_Coupling):
    """RealNVP: y_moved = x_moved exp(s) + t, with log scales s bounded in
    (-scale_bound, scale_bound) by a tanh."""

    def __init__(self, dimension, index=0, context_size=0, *, hidden_sizes=(32, 32), scale_bound=3.0, rngs):
        super().__init__(dimension, index, context_size, hidden_sizes, 2, rngs)
        self.scale_bound = scale_bound

    def elementwise(self, x, raw, inverse):
        shift, log_scale = raw[:, 0], self.scale_bound * jnp.tanh(raw[:, 1] / self.scale_bound)
        if inverse:
            return (x - shift) * jnp.exp(-log_scale), -log_scale
        return x * jnp.exp(log_scale) + shift, log_scale


class SplineCoupling(_Coupling):
    """Rational-quadratic spline coupling: ``num_bins`` bins on
    ``[-bound, bound]``, the identity outside.

    Seen once: trained by ``vi.stl_elbo`` with one draw per step (float32,
    a banana, 4 layers, bound 6, Adam 3e-3), it squeezed every draw into one
    bin at its bound (ELBO -7000), where the path estimator's variance is
    enormous and float32 rounding large; ``vi.elbo`` on the same run did not.
    Average over draws (``vi.averaged``) or use ``vi.elbo`` if it happens."""

    def __init__(self, dimension, index=0, context_size=0, *, hidden_sizes=(32, 32), num_bins=8, bound=5.0, rngs):
        super().__init__(dimension, index, context_size, hidden_sizes, num_spline_parameters(num_bins), rngs)
        self.bound = bound

    def elementwise(self, x, raw, inverse):
        return rq_spline(x, raw, self.bound, inverse)


def layer_factory(layer):
    """A layer class or ``functools.partial`` of one, checked."""
    target = layer.func if isinstance(layer, functools.partial) else layer
    if not (isinstance(target, type) and issubclass(target, Layer)):
        raise TypeError(
            f"layers: expected flow layer classes (vi.AffineCoupling, ...) or functools.partial of them, got {layer!r}"
        )
    return layer
