"""Warmup: Stan's windowed adaptation of the step size and the metric, as
pure ``init`` / ``begin`` / ``update`` / ``final`` functions stepping through a
precomputed schedule (BlackJAX's ``window_adaptation`` shape, without its closures).

The schedule (Stan reference manual, "HMC algorithm parameters"): an initial
fast window (step size only, 75 draws), slow windows of doubling length (25,
50, 100, ...) that estimate the metric, and a final fast window (50 draws).
At the end of each slow window the inverse mass matrix becomes the window's
estimate, and dual averaging restarts from a reasonable step size for the
new metric. The step size is adapted throughout by dual averaging (Hoffman
and Gelman 2014, section 3.2) towards a target acceptance rate; the final
step size is the dual-averaging mean.

Metric estimators (``adaptation=``):
- ``"stan"``: the (co)variance of the window's positions by Welford, with
  Stan's regularisation ``n/(n+5) var + 1e-3 * 5/(n+5)``.
- ``"fisher_diag"``: nutpie's diagonal (Seyboldt, Carlson and Carpenter
  2026): ``sqrt(var(positions) / var(gradients))``, which equalises the
  scales seen by positions and gradients (exact for a Gaussian with a
  diagonal covariance) and uses the gradients Stan throws away.
- ``"low_rank"``: nutpie's low-rank modified metric (``low_rank.py``): the
  Fisher diagonal plus a low-rank correction from the window's draws and
  gradients, held densely (a (d, d) inverse mass matrix). It buffers the
  longest slow window's draws and gradients: capacity x d x 2 numbers per chain.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc_util import build_adaptation_schedule

from ppl.inference.mcmc.integrators import IntegratorState, leapfrog
from ppl.inference.mcmc.low_rank import window_buffer_estimate, window_buffer_init, window_buffer_update
from ppl.inference.mcmc.metrics import kinetic_energy, sample_momentum

__all__ = [
    "AdaptationState", "WindowAdaptation", "window_schedule", "window_adaptation", "find_reasonable_step_size",
    "longest_slow_window", "ADAPTATIONS",
]

ADAPTATIONS = ("stan", "fisher_diag", "low_rank")


class AdaptationState(NamedTuple):
    step_size: jax.Array  # used by the next transition
    inverse_mass_matrix: jax.Array
    log_step_size: jax.Array  # dual averaging: x_t
    log_step_size_mean: jax.Array  # x_bar_t, the final step size's log
    error_mean: jax.Array  # H_bar_t, the running mean of (target - acceptance)
    count: jax.Array  # t, transitions since dual averaging (re)started
    centre: jax.Array  # mu = log(10 * step size at the restart)
    moments: tuple  # Welford (count, mean, m2) of positions, and of gradients for "fisher_diag"


def window_schedule(num_warmup):
    """Per warmup transition, ``(in_slow_window, ends_slow_window,
    starts_window)``: a numpy bool array of shape (num_warmup, 3), Stan's
    windows; ``starts_window`` marks the first transition and each one after
    a metric update (a step size search comes before it).

    >>> flags = window_schedule(1000)
    >>> int(flags[:, 0].sum()), np.flatnonzero(flags[:, 1]).tolist(), np.flatnonzero(flags[:, 2]).tolist()
    (875, [99, 149, 249, 449, 949], [0, 100, 150, 250, 450, 950])
    """
    flags = np.zeros((num_warmup, 3), bool)
    windows = build_adaptation_schedule(num_warmup) if num_warmup else []
    for window in windows[1:-1]:  # the first and last windows are fast
        flags[window.start : window.end + 1, 0] = True
        flags[window.end, 1] = True
    flags[1:, 2] = flags[:-1, 1]
    flags[:1, 2] = True
    return flags


def _welford_init(dimension, dense, dtype):
    zero = jnp.zeros((dimension,), dtype)
    return (jnp.zeros((), dtype), zero, jnp.zeros((dimension, dimension) if dense else (dimension,), dtype))


def _welford_update(moments, x):
    count, mean, m2 = moments
    count = count + 1
    delta = x - mean
    mean = mean + delta / count
    m2 = m2 + (jnp.outer(x - mean, delta) if m2.ndim == 2 else delta * (x - mean))
    return count, mean, m2


def _regularised_covariance(moments):
    """Stan's shrinkage towards 1e-3 * I of the window's (co)variance."""
    count, _, m2 = moments
    covariance = m2 / jnp.maximum(count - 1, 1)
    shrinkage = 1e-3 * 5.0 / (count + 5.0)
    eye = jnp.eye(m2.shape[0], dtype=m2.dtype) if m2.ndim == 2 else 1.0
    return count / (count + 5.0) * covariance + shrinkage * eye


def _fisher_diagonal(moments):
    """sqrt(var x / var g); 1 where either does not vary (a stuck or flat direction)."""
    (_, _, m2_position), (_, _, m2_gradient) = moments
    varies = (m2_position > 0) & (m2_gradient > 0) & jnp.isfinite(m2_position) & jnp.isfinite(m2_gradient)
    ratio = m2_position / jnp.where(varies, m2_gradient, 1.0)
    return jnp.where(varies, jnp.clip(jnp.sqrt(ratio), 1e-10, 1e10), 1.0)


def longest_slow_window(num_warmup):
    """The length of the longest slow window of ``window_schedule(num_warmup)`` (0 if none).

    >>> longest_slow_window(1000)
    500
    """
    windows = build_adaptation_schedule(num_warmup)[1:-1] if num_warmup else []
    return max((w.end - w.start + 1 for w in windows), default=0)


def find_reasonable_step_size(key, state, log_density_fn, step_size, inverse_mass_matrix, target=0.8):
    """Hoffman and Gelman's heuristic (2014, Algorithm 4; Stan's
    ``init_stepsize``): double or halve the step size until the acceptance
    probability of one leapfrog step crosses ``target``.

    >>> from ppl.inference.mcmc.hmc import init
    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2) / 0.01  # scale 0.1
    >>> state = init(jnp.full(3, 0.05), log_density_fn)
    >>> step = find_reasonable_step_size(jax.random.key(0), state, log_density_fn, 1.0, jnp.ones(3))
    >>> bool(0.01 < step < 0.5)
    True
    """
    log_target = jnp.log(target)

    def log_acceptance(key, step):
        momentum = sample_momentum(key, inverse_mass_matrix, state.position)
        start = IntegratorState(state.position, momentum, state.log_density, state.log_density_grad)
        end = leapfrog(log_density_fn, step, inverse_mass_matrix, start)
        change = state.log_density - kinetic_energy(inverse_mass_matrix, momentum)
        change = end.log_density - kinetic_energy(inverse_mass_matrix, end.momentum) - change
        return jnp.where(jnp.isfinite(change), change, -jnp.inf)

    step = jnp.asarray(step_size, state.position.dtype)
    first_key, key = jax.random.split(key)
    direction = jnp.where(log_acceptance(first_key, step) > log_target, 1.0, -1.0).astype(step.dtype)

    def keep_going(carry):
        step, _, n, crossed = carry
        return ~crossed & (n < 100) & (step > 1e-10) & (step < 1e10)

    def body(carry):  # one leapfrog step per iteration
        step, key, n, _ = carry
        key, draw_key = jax.random.split(key)
        step = step * 2.0**direction
        log_a = log_acceptance(draw_key, step)
        return step, key, n + 1, jnp.where(direction > 0, log_a <= log_target, log_a >= log_target)

    step, _, _, _ = jax.lax.while_loop(keep_going, body, (step, key, 0, jnp.array(False)))
    return step


class WindowAdaptation(NamedTuple):
    """Stan's windowed warmup as pure functions, BlackJAX's ``(init, update,
    final)`` plus ``begin``, so the step size search is compiled once (in the
    loop body) rather than in ``init`` and again at each window's end:

    - ``init(state, step_size, inverse_mass_matrix) -> AdaptationState``;
    - ``begin(key, adaptation_state, flags, kernel_state, log_density_fn)`` before
      each warmup transition: at the start of a window (``flags[2]``), a
      reasonable step size for the current metric and a dual-averaging restart;
    - ``update(adaptation_state, flags, kernel_state, acceptance_rate)`` after it:
      dual averaging, the window's draws, the metric at the end of a slow window;
    - ``final(adaptation_state) -> (step_size, inverse_mass_matrix)``.
    ``flags`` is a row of ``window_schedule``.
    """

    init: Callable
    begin: Callable
    update: Callable
    final: Callable


def window_adaptation(adaptation="stan", dense_mass=False, target_accept=0.8, num_warmup=1000):
    """Stan's windowed warmup (``WindowAdaptation``) with the metric estimator
    ``adaptation``; ``num_warmup`` sizes the window buffer of ``"low_rank"``.

    >>> from ppl.inference.mcmc.hmc import init as hmc_init
    >>> log_density_fn = lambda x: -0.5 * jnp.sum(x**2 / jnp.array([1.0, 100.0]))
    >>> warmup = window_adaptation()
    >>> state = hmc_init(jnp.ones(2), log_density_fn)
    >>> adapt = warmup.init(state, 1.0, jnp.ones(2))
    >>> flags = jnp.asarray(window_schedule(200))
    >>> adapt = warmup.begin(jax.random.key(0), adapt, flags[0], state, log_density_fn)
    >>> adapt = warmup.update(adapt, flags[0], state, 0.9)
    >>> warmup.final(adapt)[1].shape
    (2,)
    """
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"adaptation={adaptation!r}: choose one of {ADAPTATIONS}")
    if adaptation == "fisher_diag" and dense_mass:
        raise ValueError("adaptation='fisher_diag' estimates a diagonal metric; it takes dense_mass=False")
    capacity = max(longest_slow_window(num_warmup), 1)

    def restart(step_size, inverse_mass_matrix, moments):
        step_size = jnp.asarray(step_size, inverse_mass_matrix.dtype)
        zero = jnp.zeros((), step_size.dtype)
        centre = jnp.log(10.0 * step_size)
        return AdaptationState(step_size, inverse_mass_matrix, centre, zero, zero, zero, centre, moments)

    def fresh_moments(position):
        if adaptation == "low_rank":
            return (window_buffer_init(capacity, position.shape[0], position.dtype),)
        one = _welford_init(position.shape[0], dense_mass, position.dtype)
        return (one, one) if adaptation == "fisher_diag" else (one,)

    def init(state, step_size, inverse_mass_matrix):
        inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, state.position.dtype)
        if adaptation == "low_rank" and inverse_mass_matrix.ndim == 1:  # a dense metric throughout
            inverse_mass_matrix = jnp.diag(inverse_mass_matrix)
        return restart(step_size, inverse_mass_matrix, fresh_moments(state.position))

    def begin(key, adapt, flags, state, log_density_fn):
        def search(adapt):
            step_size = find_reasonable_step_size(key, state, log_density_fn, adapt.step_size, adapt.inverse_mass_matrix)
            return restart(step_size, adapt.inverse_mass_matrix, adapt.moments)

        return jax.lax.cond(flags[2], search, lambda adapt: adapt, adapt)

    def dual_averaging(adapt, acceptance_rate):
        # Hoffman and Gelman (2014), eq. (6), with Stan's t0 = 10, gamma = 0.05, kappa = 0.75.
        count = adapt.count + 1
        weight = 1.0 / (count + 10.0)
        error_mean = (1.0 - weight) * adapt.error_mean + weight * (target_accept - acceptance_rate)
        log_step_size = adapt.centre - jnp.sqrt(count) / 0.05 * error_mean
        average_weight = count**-0.75
        mean = average_weight * log_step_size + (1.0 - average_weight) * adapt.log_step_size_mean
        return adapt._replace(
            step_size=jnp.exp(log_step_size), log_step_size=log_step_size, log_step_size_mean=mean,
            error_mean=error_mean, count=count,
        )

    def update(adapt, flags, state, acceptance_rate):
        acceptance_rate = jnp.asarray(acceptance_rate, adapt.step_size.dtype)
        acceptance_rate = jnp.where(jnp.isfinite(acceptance_rate), acceptance_rate, 0.0)
        adapt = dual_averaging(adapt, acceptance_rate)
        in_slow_window, ends_slow_window = flags[0], flags[1]
        adapt = adapt._replace(moments=collect(adapt.moments, state, in_slow_window))

        def end_window(adapt):  # the next transition begins a window: ``begin`` searches a step size
            return adapt._replace(inverse_mass_matrix=estimate(adapt.moments), moments=fresh_moments(state.position))

        return jax.lax.cond(ends_slow_window, end_window, lambda adapt: adapt, adapt)

    def collect(moments, state, in_slow_window):
        if adaptation == "low_rank":
            return (window_buffer_update(moments[0], state.position, state.log_density_grad, in_slow_window),)
        samples = (state.position, state.log_density_grad)[: len(moments)]
        collected = tuple(_welford_update(m, x) for m, x in zip(moments, samples))
        return jax.tree.map(lambda new, old: jnp.where(in_slow_window, new, old), collected, moments)

    def estimate(moments):
        if adaptation == "low_rank":
            return window_buffer_estimate(moments[0])
        return _fisher_diagonal(moments) if adaptation == "fisher_diag" else _regularised_covariance(moments[0])

    def final(adapt):
        return jnp.exp(adapt.log_step_size_mean), adapt.inverse_mass_matrix

    return WindowAdaptation(init, begin, update, final)
