"""``vi.svgd`` and ``vi.coin_svgd`` on a model and its observations: the
particles live on the model's unconstrained space (``unconstrain``), every
step of every particle runs in one compiled ``lax.scan``, a progress bar is
fed from inside it, and the particles come back constrained.

Initial particles are uniform on (-init_radius, init_radius)^n in the
unconstrained space, retried where the log density or its gradient is not
finite, as MCMC's chains start (``mcmc.initialise``): it works for every
model, improper flat priors included (they cannot be simulated), and the
bandwidth starts at the scale of the box rather than of a prior that may be
far wider than the posterior. Coin SVGD's particles stay within reach of
where they start (its bets are made from there), another reason for a box
of moderate size.
"""

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ppl.core import as_args, as_key
from ppl.errors import DiscreteLatentError
from ppl.inference.mcmc.initialise import check_initial_positions, initial_positions
from ppl.inference.mcmc.progress import ProgressBar, tick
from ppl.inference.summary_table import Summary, _columns, _flagged, _named_leaves
from ppl.inference.vi.coin import CoinSVGDState, coin_svgd_kernel
from ppl.inference.vi.fit import FitDivergedError
from ppl.inference.vi.stein import _as_optimizer, svgd_kernel
from ppl.inference.weighted_summary import _weighted_statistics
from ppl.transforms.unconstrain import unconstrain

__all__ = ["ParticleResult", "svgd", "coin_svgd"]

_KEPT_COLUMNS = ("mean", "sd", "5%", "50%", "95%")  # no MCSE or ESS: the particles are not independent draws


class ParticleResult(NamedTuple):
    """What ``vi.svgd`` / ``vi.coin_svgd`` return.

    - ``samples``: the latent choices of the particles, nested as the
      model's, leaves ``(num_particles, ...)`` (constrained);
    - ``retvals``: the model's return value at each particle;
    - ``positions``: the particles on the unconstrained space, ``(num_particles, n)``;
    - ``history``: per step, ``"force_norm"`` and ``"update_norm"`` (means
      over particles of the Stein force's and the move's length),
      ``"bandwidth"`` and ``"mean_log_density"`` (of the particles after the step);
    - ``state``: the kernel's final state; ``target``: the ``Unconstrained`` log density.
    """

    samples: Any
    retvals: Any
    positions: jax.Array
    history: dict
    state: Any
    target: Any

    def summary(self):
        """Mean, sd and the 5%, 50% and 95% quantiles of each scalar over the
        equally weighted particles (no MCSE or ESS: SVGD's particles
        interact, they are not independent draws).

        >>> @ppl.gen
        ... def model():
        ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
        ...     ppl.sample("y", dist.Normal(mu, 1.0))
        >>> result = vi.coin_svgd(jax.random.key(0), model, (), {"y": 1.0}, 50, 300, progress=False)
        >>> print(result.summary())  # doctest: +NORMALIZE_WHITESPACE
        50 particles (coin SVGD, equally weighted, not independent draws)
              mean     sd  ...
        mu   0.5...
        """
        num_particles = self.positions.shape[0]
        joined, names = _columns(_named_leaves(self.samples), (num_particles,))
        columns, finite, _ = _weighted_statistics(joined, jnp.zeros(num_particles, joined.dtype))
        table = {column: np.asarray(columns[column]) for column in _KEPT_COLUMNS}
        warnings = _flagged(names, ~np.asarray(finite), "particles that are NaN or infinite")
        algorithm = "coin SVGD" if isinstance(self.state, CoinSVGDState) else "SVGD"
        return Summary(names, table, warnings, None, f"{num_particles} particles ({algorithm}, equally weighted, not independent draws)")


def svgd(
    key, model, args, observations, num_particles, num_steps, *, learning_rate=None, optimizer=None, kernel=None,
    init_radius=2.0, progress=True,
):
    """Stein variational gradient descent (Liu and Wang, 2016) on ``model(*args)``
    conditioned on ``observations``: ``num_particles`` particles moved
    ``num_steps`` times along the Stein force on the unconstrained space.

    - ``key``: draws the initial particles (the steps are deterministic).
    - ``learning_rate``: the step of ``optax.sgd`` (x <- x + rate phi(x)); a new
      rate reuses the compiled run. Or ``optimizer``: any optax transformation
      (``optax.adagrad(0.1)``, ...; pass the same object again to reuse the
      compiled run). Exactly one of the two. SVGD's plain update diverges
      when the rate is too large for the posterior's curvature and crawls when
      too small; ``vi.coin_svgd`` needs none.
    - ``kernel``: ``vi.rbf_kernel()`` (default: median-heuristic bandwidth),
      ``vi.rbf_kernel(bandwidth)`` or ``vi.pairwise_kernel(kernel_fn)``.
    - ``init_radius``: initial particles uniform on (-init_radius, init_radius)^n
      (unconstrained), retried where the log density or gradient is not finite.
    - ``progress``: a progress bar (use False inside a ``jax.jit``).

    Returns a ``ParticleResult`` (``samples``, ``positions``, ``history``,
    ``summary()``). A step that makes a particle's position, log density or
    gradient non-finite is not taken: the run stops there with
    ``vi.FitDivergedError`` (its ``state`` the last finite one, ``step`` how
    many steps it holds). Compiled once per model, shapes and settings.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> result = vi.svgd(jax.random.key(0), model, (), {"y": 1.0}, 50, 200, learning_rate=0.5, progress=False)
    >>> result.samples["mu"].shape, result.positions.shape, result.history["update_norm"].shape
    ((50,), (50, 1), (200,))
    >>> bool(abs(result.samples["mu"].mean() - 0.5) < 0.05)  # the posterior is N(0.5, 0.5)
    True
    """
    if (learning_rate is None) == (optimizer is None):
        raise TypeError(
            "svgd: give exactly one of learning_rate= (plain SVGD, optax.sgd) and optimizer= (an optax "
            "transformation); vi.coin_svgd needs neither"
        )
    if optimizer is not None:
        _as_optimizer(optimizer, "svgd")  # its type checked now, not inside the compiled run
        rate, settings = jnp.zeros(()), ("svgd", optimizer, kernel)
    else:
        _as_optimizer(learning_rate, "svgd")
        rate, settings = jnp.asarray(learning_rate, jnp.result_type(float)), ("svgd", None, kernel)
    return _run("svgd", key, model, args, observations, num_particles, num_steps, init_radius, progress, rate, settings)


def coin_svgd(key, model, args, observations, num_particles, num_steps, *, kernel=None, init_radius=2.0, progress=True):
    """Coin SVGD (Sharrock and Nemeth, 2023) on ``model(*args)`` conditioned on
    ``observations``: SVGD's Stein force with a coin-betting update per
    particle coordinate in place of a learning rate (``vi.coin_svgd_kernel``).
    Arguments and the result as ``vi.svgd``, without ``learning_rate`` and
    ``optimizer``. The moves are in the units of the unconstrained position:
    a posterior much narrower or wider than 1 needs more steps to settle.

    >>> @ppl.gen
    ... def model():
    ...     scale = ppl.sample("scale", dist.HalfNormal(2.0))   # a positive latent
    ...     ppl.sample("ys", dist.Normal(0.0, scale).expand([20]))
    >>> ys = 1.5 * jax.random.normal(jax.random.key(1), (20,))
    >>> result = vi.coin_svgd(jax.random.key(0), model, (), {"ys": ys}, 100, 500, progress=False)
    >>> bool(jnp.all(result.samples["scale"] > 0)), result.samples["scale"].shape
    (True, (100,))
    """
    rate = jnp.zeros(())
    return _run("coin_svgd", key, model, args, observations, num_particles, num_steps, init_radius, progress, rate, ("coin", None, kernel))


def _check(who, num_particles, num_steps, init_radius):
    for name, value, least in (("num_particles", num_particles, 2), ("num_steps", num_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            why = " (the kernel's repulsion acts between particles)" if name == "num_particles" else ""
            raise ValueError(f"{who}: {name}={value!r}: need an integer >= {least}{why}")
    if not float(init_radius) > 0.0:
        raise ValueError(f"{who}: init_radius={init_radius!r}: need a positive number")


def _target(who, model, args, observations):
    try:
        target = unconstrain(model, args, observations or {})
    except DiscreteLatentError as error:
        raise DiscreteLatentError(
            f"{error} -- vi.{who} moves continuous latents only: observe the discrete ones or sum them out of the model",
            error.addresses,
        ) from None
    if target.dimension == 0:
        raise ValueError("the model has no continuous latent choices given these observations: there is nothing to sample")
    return target


def _run(who, key, model, args, observations, num_particles, num_steps, init_radius, progress, rate, settings):
    _check(who, num_particles, num_steps, init_radius)
    key, args = as_key(key), as_args(args)
    target = _target(who, model, args, observations)
    radius = jnp.asarray(init_radius, jnp.result_type(float))
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((key, target, rate, radius)))
    with _StepBar(num_steps, enabled=progress and not traced, description=who) as bar:
        state, history, finite, start, samples, retvals = _compiled(
            target, key, radius, rate, bar.id, settings=settings, num_particles=int(num_particles), num_steps=int(num_steps)
        )
    check_initial_positions(target, *start, init_radius)
    history = {name: values for name, values in history._asdict().items()}
    if not isinstance(finite, jax.core.Tracer) and not bool(np.all(finite)):
        bad = int(np.argmin(np.asarray(finite)))
        raise FitDivergedError(
            f"{who}: step {bad + 1} gave a non-finite particle position, log density or gradient; stopped there. "
            f"error.state holds the particles after {bad} steps"
            + (": lower the learning rate, or use vi.coin_svgd, which needs none" if who == "svgd" else ""),
            state,
            bad,
            {name: values[:bad] for name, values in history.items()},
        )
    return ParticleResult(samples, retvals, state.positions, history, state, target)


class _History(NamedTuple):
    force_norm: jax.Array
    update_norm: jax.Array
    bandwidth: jax.Array
    mean_log_density: jax.Array


def _kernel(target, rate, settings):
    algorithm, optimizer, kernel = settings
    if algorithm == "coin":
        return coin_svgd_kernel(target.log_density, kernel)
    return svgd_kernel(target.log_density, optimizer if optimizer is not None else _as_optimizer(rate), kernel)


def _finite(state):
    return jnp.all(jnp.isfinite(state.positions)) & jnp.all(jnp.isfinite(state.log_densities)) & jnp.all(jnp.isfinite(state.gradients))


@functools.partial(jax.jit, static_argnames=("settings", "num_particles", "num_steps"))
def _compiled(target, key, radius, rate, bar_id, *, settings, num_particles, num_steps):
    positions, valid = initial_positions(target, key, radius, num_particles)
    kernel = _kernel(target, rate, settings)

    def step(carry, iteration):
        state, failed = carry
        new_state, info = kernel.step(state)
        finite = _finite(new_state) & ~failed
        # A non-finite step is not taken, nor any after it: the state stays the last finite one.
        state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        if bar_id is not None:  # None: no progress bar, nothing compiled for it
            tick(bar_id, 0, 1, iteration, num_steps, iteration + 1, jnp.zeros((), jnp.int32))
        history = _History(info.force_norm, info.update_norm, info.bandwidth, jnp.mean(new_state.log_densities))
        return (state, ~finite), (history, finite)

    (state, _), (history, finite) = lax.scan(step, (kernel.init(positions), jnp.bool_(False)), jnp.arange(num_steps))
    samples, retvals = jax.vmap(target.constrain)(state.positions)
    return state, history, finite, (positions, valid), samples, retvals


class _StepBar(ProgressBar):
    """MCMC's bar, fed the same way from inside the compiled loop, counting
    steps (of all particles at once) under the algorithm's name."""

    def __init__(self, total, enabled, description):
        super().__init__(total, enabled, f"{description}: ")

    def report(self, part, phase, done, divergences):
        now = time.perf_counter()
        self.start = self.start or (now, done)  # the first report: compilation does not count in the rate
        if now > self.start[0]:
            rate = (done - self.start[1]) / (now - self.start[0])
            self.bar.set_postfix_str(f"{rate:,.0f} steps/s", refresh=False)
        self.bar.update(done - self.bar.n)
