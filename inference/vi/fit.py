"""``fit``: maximise any objective with an optax optimiser.

Steps run in chunks: each chunk is one jitted ``lax.scan`` over optimiser
steps, compiled once (a shorter last chunk masks its extra steps rather than
compiling again), so Python is visited once per chunk and the progress bar
moves per chunk. With ``batch_size``, each step draws a minibatch without
replacement and the objective counts its data term ``N / batch_size`` times
(``objective.with_data_scale``), which keeps the gradient unbiased.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from tqdm.auto import tqdm

from ppl.trace import join_static, split_static
from ppl.transforms.auto_strategies import choose_strategies

__all__ = ["fit", "FitState", "FitResult", "FitDivergedError"]


class FitState(NamedTuple):
    """Everything a run needs to go on: pass it back as ``fit(..., state=)``."""

    params: Any
    optimizer_state: Any
    key: Any
    step: Any


class FitResult(NamedTuple):
    params: Any
    state: FitState
    history: np.ndarray  # the objective estimate at each step of this call
    strategies: Any = None  # with strategies="auto": the pilot run's StrategyChoice (a dict and the figures)


def fit(
    objective,
    params,
    optimizer,
    num_steps,
    args=(),
    *,
    key=None,
    state=None,
    batch_size=None,
    in_axes=0,
    steps_per_call=None,
    progress=True,
):
    """Maximise ``objective`` (an ``Expectation`` of ``(key, params, *args)``,
    e.g. ``vi.elbo(model, guide)`` with ``args = (observations, ...)``) over
    ``params`` with ``optimizer`` (optax) for ``num_steps`` steps.

    ``batch_size``: draw that many data points per step along ``in_axes`` (as
    ``jax.vmap``'s, over ``args``). ``state``: resume a previous run (its key,
    step count and optimiser state; ``params`` is then ignored; pass the same
    ``optimizer`` object to reuse the compiled steps). ``steps_per_call``:
    steps per compiled chunk (default 100); the progress bar moves per chunk,
    so lower it when one step takes long. An objective with
    ``strategies="auto"`` first chooses its strategies by a pilot run at the
    initial parameters (``ppl.transforms.choose_strategies``, reported in
    ``result.strategies`` and printed with the progress bar); a resumed run
    passing ``objective.with_strategies(result.strategies.strategies)`` reuses them.

    >>> @ppl.gen
    ... def model(params):
    ...     z = ppl.sample("z", dist.Normal(0.0, 1.0))
    ...     ppl.sample("x", dist.Normal(z, 1.0))
    >>> guide = vi.mean_field(model, (None,), {"x": 2.0})
    >>> result = vi.fit(vi.elbo(model, guide), guide.init_params(), optax.adam(0.05), 500,
    ...                 ({"x": 2.0},), key=jax.random.key(0), progress=False)
    >>> bool(abs(result.params["guide"]["loc"][0] - 1.0) < 0.2)  # the posterior mean is 1
    True
    """
    if state is None:
        if key is None:
            raise TypeError("fit needs key= (or state= from a previous run)")
        state = FitState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))
    args = tuple(args)
    choice = None
    if isinstance(getattr(objective, "strategies", None), str):  # "auto": a pilot run first
        choice = choose_strategies(objective, jax.random.fold_in(state.key, 7), state.params, *args)
        objective = objective.with_strategies(choice.strategies)
        if progress:
            print(choice)
    size = _data_size(args, in_axes) if batch_size is not None else None
    if size is not None:
        if not 0 < batch_size <= size:
            raise ValueError(f"fit: batch_size must be in 1..{size} (the data size along in_axes), got {batch_size}")
        objective = _rescaled(objective, size / batch_size)
    chunk = steps_per_call or 100  # fixed, so a resumed or shorter run reuses the compiled chunk
    dynamic, description = split_static(args)
    axes = _axes(args, in_axes)
    history = []
    with tqdm(total=num_steps, disable=not progress, desc="fit") as bar:
        done = 0
        while done < num_steps:
            todo = min(chunk, num_steps - done)
            last = state
            state, (values, finite) = _chunk(objective, optimizer, chunk, batch_size, description, axes, state, todo, *dynamic)
            values, finite = np.asarray(values[:todo]), np.asarray(finite[:todo])
            if not finite.all():
                bad = int(np.argmin(finite))
                history.append(values[:bad])
                raise _diverged(state, int(last.step) + bad, values[bad], np.concatenate(history))
            history.append(values)
            done += todo
            bar.update(todo)
            bar.set_postfix(objective=f"{values.mean():.4g}")
    return FitResult(state.params, state, np.concatenate(history) if history else np.zeros(0), choice)


class FitDivergedError(FloatingPointError):
    """``fit`` met a non-finite objective, gradient or parameter. ``state`` is
    the last finite state (resume from it with ``fit(..., state=error.state)``
    and a smaller learning rate); ``step`` the number of steps it holds;
    ``history`` the objective up to there."""

    def __init__(self, message, state, step, history):
        super().__init__(message)
        self.state, self.step, self.history = state, step, history


def _diverged(state, step, value, history):
    return FitDivergedError(
        f"fit: step {step + 1} gave a non-finite objective, gradient or parameters (objective={value}); "
        f"stopped there. error.state holds the last finite state (after {step} steps): resume with "
        "vi.fit(..., state=error.state) and a smaller learning rate",
        state,
        step,
        history,
    )


def _rescaled(objective, scale):
    if not hasattr(objective, "with_data_scale"):
        raise TypeError(
            f"fit: minibatches rescale the objective's data term, and {objective!r} has no with_data_scale; "
            "use a vi objective, or rescale inside your own objective and leave batch_size=None"
        )
    return objective.with_data_scale(scale)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _chunk(objective, optimizer, length, batch_size, description, axes, state, todo, *dynamic):
    args = join_static(dynamic, description)

    def step(state):
        key, step_key, batch_key = jax.random.split(state.key, 3)
        batch = args if batch_size is None else _minibatch(batch_key, args, axes, batch_size)
        value, grads = objective.value_and_grad_estimate(step_key, state.params, *batch)
        updates, optimizer_state = optimizer.update(jax.tree.map(jnp.negative, grads), state.optimizer_state, state.params)
        new_state = FitState(optax.apply_updates(state.params, updates), optimizer_state, key, state.step + 1)
        finite = _all_finite((value, grads, new_state.params))
        # A non-finite step is not taken: the state stays the last finite one.
        new_state = lax.cond(finite, lambda: new_state, lambda: state)
        return new_state, (jnp.asarray(value, jnp.result_type(float)), finite)  # the dtype skip returns

    def skip(state):  # the tail of a short last chunk, or every step after a non-finite one
        return state, (jnp.zeros((), jnp.result_type(float)), jnp.bool_(True))

    def guarded(carry, index):
        state, failed = carry
        state, (value, finite) = lax.cond((index < todo) & ~failed, step, skip, state)
        return (state, failed | ~finite), (value, finite)

    (state, _), outputs = lax.scan(guarded, (state, jnp.bool_(False)), jnp.arange(length))
    return state, outputs


def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _axes(args, in_axes):
    """``in_axes`` (as ``jax.vmap``'s) with one entry per arg."""
    return in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)


def _data_size(args, in_axes, who="fit"):
    """The one size of the batch axis of ``args`` along ``in_axes``."""
    sizes = {
        jnp.shape(leaf)[axis]
        for value, axis in zip(args, _axes(args, in_axes))
        if axis is not None
        for leaf in jax.tree.leaves(value)
        if hasattr(leaf, "shape")
    }
    if len(sizes) != 1:
        raise ValueError(f"{who}: the batched args must share one size along in_axes={in_axes}, got sizes {sorted(sizes)}")
    return sizes.pop()


def _minibatch(key, args, axes, batch_size):
    size = _data_size(args, axes)
    index = jax.random.choice(key, size, (batch_size,), replace=False)
    take = lambda value, axis: value if axis is None else jax.tree.map(lambda x: jnp.take(x, index, axis=axis), value)
    return tuple(take(value, axis) for value, axis in zip(args, axes))
