"""Involutive MCMC (Neklyudov, Welling, Egorov and Vetrov 2020; Gen's
``involution_mh``, Cusumano-Towner et al. 2020).

An auxiliary generative function draws u given the current trace x; a
deterministic involution maps (x, u) to (x', u'), with f(f(x, u)) = (x, u);
the move is accepted with

    log alpha = log p(x') + log q(u'; x') - log p(x) - log q(u; x) + log |det J_f(x, u)|

where J is the Jacobian of the involution over its continuous inputs
(discrete values are held fixed: a family of diffeomorphisms indexed by them).
Split/merge moves of reversible-jump MCMC, swaps of labels, and
deterministic moves with a non-trivial volume change are all of this form.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ppl.choicemap import by_path, from_paths
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.trace_kernels import MHState, check_model_addresses, metropolis_accept

__all__ = ["involutive", "log_abs_det_jacobian"]


def involutive(model, auxiliary, involution, auxiliary_args=()):
    """Involutive MCMC on the traces of ``model``.

    - ``auxiliary``: a generative function called as ``auxiliary(trace,
      *auxiliary_args)`` on the current trace; its choices are u.
    - ``involution(model_choices, auxiliary_choices) -> (new_model_choices,
      new_auxiliary_choices)``, pure JAX on choice maps. It gets the trace's
      whole choice map and returns the values at the model addresses it moves
      (the other addresses keep theirs: return only what moves, since the
      Jacobian is taken over the moved values and u), and the new auxiliary
      choices, at the auxiliary's addresses. It must be an involution.

    The log |det J| of the involution over its continuous inputs comes from
    ``jax.jacfwd`` (``log_abs_det_jacobian``); a move of discrete values only
    has none. ``init(trace) -> MHState``; ``step(key, state) -> (MHState, MHInfo)``.

    A scale move on a positive choice, (a, u) -> (a exp(u), -u), |det J| = exp(u):

    >>> @ppl.gen
    ... def model():
    ...     a = ppl.sample("a", dist.Gamma(3.0, 2.0))
    ...     ppl.sample("count", dist.Poisson(a))
    >>> @ppl.gen
    ... def auxiliary(trace):
    ...     ppl.sample("u", dist.Normal(0.0, 0.5))
    >>> def scale_move(choices, auxiliary_choices):
    ...     u = auxiliary_choices["u"]
    ...     return {"a": choices["a"] * jnp.exp(u)}, {"u": -u}
    >>> trace, _ = model.generate(jax.random.key(0), {"count": 4}, ())
    >>> kernel = ppl.inference.mcmc.involutive(model, auxiliary, scale_move)
    >>> state, info = jax.jit(kernel.step)(jax.random.key(1), kernel.init(trace))
    >>> int(state.trace.choices["count"]), bool(state.trace.choices["a"] > 0)
    (4, True)
    """

    def step(key, state):
        auxiliary_key, update_key, accept_key = jax.random.split(key, 3)
        trace = state.trace
        forward = auxiliary.simulate(auxiliary_key, (trace, *auxiliary_args))
        new_model, new_auxiliary = involution(trace.choices, forward.choices)
        check_model_addresses(new_model, trace.choices, "the involution's new model choices")
        log_abs_det = log_abs_det_jacobian(involution, trace.choices, forward.choices)
        proposed, log_weight, _ = model.update(update_key, trace, new_model, trace.args)
        backward, _ = auxiliary.assess(new_auxiliary, (proposed, *auxiliary_args))
        log_alpha = log_weight + backward - forward.log_density + log_abs_det
        trace, info = metropolis_accept(accept_key, log_alpha, proposed, trace)
        return MHState(trace), info

    return Kernel(MHState, step)


def log_abs_det_jacobian(involution, model_choices, auxiliary_choices):
    """log |det J| of ``(x_moved, u) -> (x'_moved, u')`` over the continuous
    (floating-point) values, by ``jax.jacfwd`` on them flattened; x_moved are
    the model addresses the involution returns. The values it keeps are an
    identity block of a block-triangular Jacobian, so they drop out. 0 when
    nothing continuous moves.

    >>> swap = lambda x, u: ({"a": x["b"], "b": x["a"]}, u)
    >>> float(log_abs_det_jacobian(swap, {"a": 1.0, "b": 2.0}, {}))
    0.0
    >>> scale = lambda x, u: ({"a": x["a"] * jnp.exp(u["u"])}, {"u": -u["u"]})
    >>> round(float(log_abs_det_jacobian(scale, {"a": 1.5}, {"u": 0.3})), 4)
    0.3
    """
    moved = list(by_path(jax.eval_shape(lambda: involution(model_choices, auxiliary_choices)[0])))
    model_flat, auxiliary_flat = by_path(model_choices), by_path(auxiliary_choices)
    inputs = {("model", *p): model_flat[p] for p in moved} | {("auxiliary", *p): v for p, v in auxiliary_flat.items()}
    continuous = {p: jnp.asarray(v) for p, v in inputs.items() if _is_continuous(v)}
    if not continuous:
        return jnp.zeros((), jnp.result_type(float))
    vector, unravel = ravel_pytree(continuous)

    def moved_values(vector):
        values = {**inputs, **unravel(vector)}
        x = from_paths({**model_flat, **{p[1:]: v for p, v in values.items() if p[0] == "model"}})
        u = from_paths({p[1:]: v for p, v in values.items() if p[0] == "auxiliary"}) if auxiliary_flat else auxiliary_choices
        new_model, new_auxiliary = involution(x, u)
        outputs = {("model", *p): v for p, v in by_path(new_model).items()} | {("auxiliary", *p): v for p, v in by_path(new_auxiliary).items()}
        return ravel_pytree({p: jnp.asarray(v) for p, v in outputs.items() if _is_continuous(v)})[0]

    out_size = jax.eval_shape(moved_values, vector).shape[0]
    if out_size != vector.shape[0]:
        raise ValueError(
            f"the involution maps {vector.shape[0]} continuous values (the moved model values and the auxiliary "
            f"choices) to {out_size}: an involution keeps the dimension; return new values at the same addresses"
        )
    return jnp.linalg.slogdet(jax.jacfwd(moved_values)(vector))[1]


def _is_continuous(value):
    return jnp.issubdtype(jnp.result_type(value), jnp.inexact)
