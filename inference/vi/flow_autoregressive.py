"""Autoregressive flow layers on a masked network: masked autoregressive
(MAF, Papamakarios et al., 2017) and inverse autoregressive (IAF, Kingma et
al., 2016), both on a MADE (Germain et al., 2015). The layer interface is
``flow_layers.py``'s; every other layer runs its coordinates in the reverse
order, so stacked layers condition both ways.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ppl.inference.vi.flow_layers import Layer, _float, _with_context

__all__ = ["MaskedAutoregressive", "InverseAutoregressive", "MADE"]


class MADE(nnx.Module):
    """A masked MLP (Germain et al., 2015): output ``i`` (of each of
    ``outputs_per_element`` groups) depends only on the inputs before ``i`` in
    ``order`` (default: the coordinates' own) and on the context. The last
    layer starts at zero."""

    def __init__(self, dimension, context_size, hidden_sizes, outputs_per_element, *, order=None, rngs):
        dtype = _float()
        order = list(range(dimension)) if order is None else list(order)  # coordinate i comes order[i]-th
        inputs = [1 + order[i] for i in range(dimension)] + [0] * context_size  # context: degree 0, seen by all
        hidden = [[1 + k % max(dimension - 1, 1) if dimension > 1 else 0 for k in range(h)] for h in hidden_sizes]
        degrees = [inputs] + hidden
        # connections as static bool tables (hashable, so part of the module's structure, not its parameters)
        self.masks = tuple(_connections(a, b, strict=False) for a, b in zip(degrees, degrees[1:]))
        out_degrees = inputs[:dimension] * outputs_per_element
        self.out_mask = _connections(degrees[-1], out_degrees, strict=True)
        self.hidden = nnx.List([nnx.Linear(len(a), len(b), param_dtype=dtype, rngs=rngs) for a, b in zip(degrees, degrees[1:])])
        zeros = nnx.initializers.zeros
        self.out = nnx.Linear(len(degrees[-1]), len(out_degrees), kernel_init=zeros, bias_init=zeros, param_dtype=dtype, rngs=rngs)

    def __call__(self, inputs):
        for layer, mask in zip(self.hidden, self.masks):
            inputs = jnp.tanh(inputs @ _masked(layer.kernel[...], mask) + layer.bias[...])
        return inputs @ _masked(self.out.kernel[...], self.out_mask) + self.out.bias[...]


def _connections(from_degrees, to_degrees, strict):
    """Which unit of ``from_degrees`` feeds which of ``to_degrees``: a degree
    may read lower degrees (and, unless ``strict``, its own)."""
    a, b = np.array(from_degrees)[:, None], np.array(to_degrees)[None, :]
    return tuple(map(tuple, (b > a) if strict else (b >= a)))


def _masked(kernel, mask):
    return jnp.where(np.array(mask, bool), kernel, jnp.zeros((), kernel.dtype))  # in the kernel's dtype


class _Autoregressive(Layer):
    def __init__(self, dimension, index, context_size, hidden_sizes, scale_bound, rngs):
        self.dimension, self.scale_bound = dimension, scale_bound
        # every other layer runs in the reverse order, so stacked layers condition both ways
        self.reversed = index % 2 == 1
        order = range(dimension - 1, -1, -1) if self.reversed else range(dimension)
        self.made = MADE(dimension, context_size, hidden_sizes, 2, order=order, rngs=rngs)

    def _shift_log_scale(self, inputs, context):
        raw = self.made(_with_context(inputs, context))
        shift, raw_scale = raw[: self.dimension], raw[self.dimension :]
        return shift, self.scale_bound * jnp.tanh(raw_scale / self.scale_bound)

    def _parallel(self, y, context):
        """x = (y - t(y)) exp(-s(y)): the direction a MADE evaluates in one pass."""
        shift, log_scale = self._shift_log_scale(y, context)
        return (y - shift) * jnp.exp(-log_scale), -jnp.sum(log_scale)

    def _sequential(self, x, context):
        """The y with x = (y - t(y)) exp(-s(y)): ``d`` passes, one coordinate each."""

        def step(_, y):
            shift, log_scale = self._shift_log_scale(y, context)
            return x * jnp.exp(log_scale) + shift

        y = jax.lax.fori_loop(0, self.dimension, step, jnp.zeros_like(x))
        return y, jnp.sum(self._shift_log_scale(y, context)[1])


class MaskedAutoregressive(_Autoregressive):
    """MAF: the density is one MADE pass, a draw ``d`` passes. As a layer of
    a variational family (drawn from every step) the inverse autoregressive
    layer is usually the faster choice; this one suits maximum likelihood."""

    def __init__(self, dimension, index=0, context_size=0, *, hidden_sizes=(32, 32), scale_bound=3.0, rngs):
        super().__init__(dimension, index, context_size, hidden_sizes, scale_bound, rngs)

    def forward(self, x, context=None):
        return self._sequential(x, context)

    def inverse(self, y, context=None):
        return self._parallel(y, context)


class InverseAutoregressive(_Autoregressive):
    """IAF: a draw is one MADE pass, y = x exp(s(x)) + t(x); the density of
    a given point (and the path score) takes ``d`` passes."""

    def __init__(self, dimension, index=0, context_size=0, *, hidden_sizes=(32, 32), scale_bound=3.0, rngs):
        super().__init__(dimension, index, context_size, hidden_sizes, scale_bound, rngs)

    def forward(self, x, context=None):
        shift, log_scale = self._shift_log_scale(x, context)
        return x * jnp.exp(log_scale) + shift, jnp.sum(log_scale)

    def inverse(self, y, context=None):
        """x = (y - t(x)) exp(-s(x)): ``d`` passes, one coordinate each."""

        def step(_, x):
            shift, log_scale = self._shift_log_scale(x, context)
            return (y - shift) * jnp.exp(-log_scale)

        x = jax.lax.fori_loop(0, self.dimension, step, jnp.zeros_like(y))
        return x, -jnp.sum(self._shift_log_scale(x, context)[1])

    def score_forward(self, x, y, score, context=None):
        """J^-T (score - grad log |det J|) with J (triangular: lower in the
        natural order, upper in the reversed) from one batched forward-mode
        pass of ``d`` tangents through the MADE, then a triangular solve:
        the same work as ``d`` sequential products, in one pass."""
        jacobian, grad_log_det = jax.jacfwd(lambda v: self.forward(v, context))(x)  # both from one pass
        return jax.scipy.linalg.solve_triangular(jacobian.T, score - grad_log_det, lower=self.reversed)
