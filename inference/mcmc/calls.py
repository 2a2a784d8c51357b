"""The high-level calls: ``mcmc.nuts``, ``mcmc.hmc``, ``mcmc.mala`` on a
model and its observations (through ``ppl.transforms.unconstrain``)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ppl.core import as_args, as_key
from ppl.choicemap import as_path, by_path, filter_choices, from_paths, merge, select, to_arrays
from ppl.errors import AddressError, DiscreteLatentError, format_address
from ppl.inference.mcmc.adaptation import ADAPTATIONS
from ppl.inference.mcmc.chains import check_chain_method
from ppl.inference.mcmc.initialise import check_initial_positions
from ppl.inference.mcmc.progress import ProgressBar
from ppl.inference.mcmc.result import MCMCResult
from ppl.inference.mcmc.sampling import ChainState, FreshStart, Settings, sample_chains, start_positions
from ppl.trace import join_static, split_static
from ppl.transforms.unconstrain import unconstrain

__all__ = ["nuts", "hmc", "mala"]


def nuts(
    key, model, args, observations, *, num_warmup=1000, num_samples=1000, num_chains=4, target_accept=0.8,
    max_tree_depth=10, adaptation="stan", dense_mass=False, init_radius=2.0, thinning=1, chain_method="vmap",
    progress=True, state=None, keep=None, gibbs=None,
):
    """Draws from ``model(*args)`` conditioned on ``observations`` by the No-U-Turn sampler.

    - ``key``: a JAX key; chain c uses ``split(key, num_chains)[c]``.
    - ``model``, ``args``, ``observations``: a ``@ppl.gen`` model, its arguments and a
      choice map of observed values; every other choice is a latent.
    - ``gibbs``: the discrete latents (a list of addresses), each updated by enumerative
      Gibbs (its exact conditional, ``mcmc.gibbs``; also over the elements of a
      ``gf.vmap``) before every transition; NUTS moves the continuous latents given them
      (NumPyro's ``DiscreteHMCGibbs``). A model with discrete latents needs it.
    - ``num_warmup``: transitions of Stan's windowed adaptation (not kept);
      ``num_samples``: kept draws per chain; ``num_chains``: independent chains.
    - ``target_accept``: the mean acceptance rate dual averaging aims at (Stan's 0.8).
    - ``max_tree_depth``: at most 2**max_tree_depth - 1 leapfrog steps per transition.
    - ``adaptation``: the metric's estimator, ``"stan"`` (Welford on positions),
      ``"fisher_diag"`` (nutpie's diagonal from positions and gradients) or ``"low_rank"``
      (nutpie's diagonal plus a low-rank correction, held as a dense matrix);
      ``dense_mass``: a full inverse mass matrix instead of a diagonal (``"stan"``).
    - ``init_radius``: initial positions uniform on (-init_radius, init_radius) in the
      unconstrained space, retried where the log density or gradient is not finite.
    - ``thinning``: keep every thinning-th draw; ``keep``: addresses (a list or a
      ``ppl.Selection``) to keep in ``samples`` (all latents by default).
    - ``chain_method``: ``"vmap"``, ``"sequential"`` or ``"sharded"`` (chains split across devices).
    - ``progress``: one progress bar for all chains (use False inside a ``jax.jit``).
    - ``state``: a previous ``result.state`` to continue those chains (with ``num_warmup=0``
      the same key continues the same random stream: 500 + 500 draws equal 1000 draws).

    Returns an ``MCMCResult`` (``samples``, ``retvals``, ``stats``, ``state``, ``summary()``,
    ``to_arviz()``). Compiled once per model, shapes and settings.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> result = mcmc.nuts(jax.random.key(0), model, (), {"y": 1.0}, num_warmup=200,
    ...                    num_samples=200, num_chains=2, progress=False)
    >>> result.samples["mu"].shape, result.stats["diverging"].shape
    ((2, 200), (2, 200))
    >>> bool(abs(result.samples["mu"].mean() - 0.5) < 0.15)  # the posterior is N(0.5, 0.5)
    True
    """
    _check_positive_int(max_tree_depth=max_tree_depth)
    settings = dict(algorithm="nuts", max_tree_depth=int(max_tree_depth), num_integration_steps=0)
    return _run(
        key, model, args, observations, settings, num_warmup, num_samples, num_chains, target_accept, adaptation,
        dense_mass, init_radius, thinning, chain_method, progress, state, keep, 1.0, gibbs,
    )


def hmc(
    key, model, args, observations, *, step_size, num_integration_steps, num_warmup=0, num_samples, num_chains=1,
    target_accept=0.8, adaptation="stan", dense_mass=False, init_radius=2.0, thinning=1, chain_method="vmap",
    progress=True, state=None, keep=None, gibbs=None,
):
    """Hamiltonian Monte Carlo with ``num_integration_steps`` leapfrog steps of
    ``step_size`` per transition. With ``num_warmup=0`` nothing is adapted (identity
    metric); with warmup the step size (starting at ``step_size``) and the metric are
    adapted as in ``nuts``. Other arguments and the result as ``nuts``.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> result = mcmc.hmc(jax.random.key(0), model, (), {"y": 1.0}, step_size=0.3,
    ...                   num_integration_steps=5, num_samples=300, progress=False)
    >>> result.samples["mu"].shape
    (1, 300)
    """
    _check_positive_int(num_integration_steps=num_integration_steps)
    settings = dict(algorithm="hmc", max_tree_depth=0, num_integration_steps=int(num_integration_steps))
    return _run(
        key, model, args, observations, settings, num_warmup, num_samples, num_chains, target_accept, adaptation,
        dense_mass, init_radius, thinning, chain_method, progress, state, keep, step_size, gibbs,
    )


def mala(
    key, model, args, observations, *, step_size, num_warmup=0, num_samples, num_chains=1, target_accept=0.574,
    adaptation="stan", init_radius=2.0, thinning=1, chain_method="vmap", progress=True, state=None, keep=None,
    gibbs=None,
):
    """The Metropolis-adjusted Langevin algorithm with ``step_size``; with warmup the
    step size and a diagonal metric are adapted (target acceptance 0.574, the
    optimal rate of Roberts and Rosenthal 1998). Other arguments and the result as ``nuts``.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> result = mcmc.mala(jax.random.key(0), model, (), {"y": 1.0}, step_size=0.5,
    ...                    num_samples=300, progress=False)
    >>> result.stats["acceptance_rate"].shape
    (1, 300)
    """
    settings = dict(algorithm="mala", max_tree_depth=0, num_integration_steps=0)
    return _run(
        key, model, args, observations, settings, num_warmup, num_samples, num_chains, target_accept, adaptation,
        False, init_radius, thinning, chain_method, progress, state, keep, step_size, gibbs,
    )


def _number(value):
    """A JAX array (a tracer included) as it is, else a Python float: jit takes
    it without an array conversion of ours per call."""
    return value if isinstance(value, jax.Array) else float(value)


def _check_positive_int(**named):
    for name, value in named.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: need an integer >= 1")


def _check_settings(num_warmup, num_samples, num_chains, target_accept, adaptation, thinning, chain_method, init_radius):
    _check_positive_int(num_samples=num_samples, thinning=thinning)
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, (int, np.integer)) or num_warmup < 0:
        raise ValueError(f"num_warmup={num_warmup!r}: need an integer >= 0")
    check_chain_method(chain_method, num_chains)
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept={target_accept!r}: need a number in (0, 1)")
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"adaptation={adaptation!r}: choose one of {ADAPTATIONS}")
    if not float(init_radius) > 0.0:
        raise ValueError(f"init_radius={init_radius!r}: need a positive number")


def _run(
    key, model, args, observations, algorithm, num_warmup, num_samples, num_chains, target_accept, adaptation,
    dense_mass, init_radius, thinning, chain_method, progress, state, keep, step_size, gibbs,
):
    _check_settings(num_warmup, num_samples, num_chains, target_accept, adaptation, thinning, chain_method, init_radius)
    if adaptation == "fisher_diag" and dense_mass:
        raise ValueError("adaptation='fisher_diag' estimates a diagonal metric; it takes dense_mass=False")
    key, args, observations = as_key(key), as_args(args), to_arrays(observations or {})
    gibbs_paths = tuple(as_path(a) for a in (gibbs or ()))
    discrete = _initial_discrete(model, args, observations, gibbs_paths, key, num_chains) if state is None else state.discrete
    dense_mass = bool(dense_mass or adaptation == "low_rank")  # low_rank's metric is held densely
    if state is None:  # the chains start inside the compiled call
        chains = FreshStart(_number(init_radius), _number(step_size), discrete, int(num_chains))
    else:
        chains = _checked_state(state, num_chains, lambda: _target(model, args, observations, discrete, algorithm["algorithm"]))
        dense_mass = bool(jnp.ndim(chains.inverse_mass_matrix) == 3 or dense_mass)
    settings = Settings(
        num_warmup=int(num_warmup), num_samples=int(num_samples), thinning=int(thinning), chain_method=chain_method,
        adaptation=adaptation, dense_mass=dense_mass, target_accept=float(target_accept), gibbs=gibbs_paths,
        **algorithm,
    )
    dynamic, description = split_static(args)
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((key, dynamic, observations, chains)))
    phase = "warmup" if num_warmup else "sampling"
    with ProgressBar(num_chains * (num_warmup + num_samples), enabled=progress and not traced, description=phase) as bar:
        outputs = _sample_model(model, description, dynamic, observations, key, chains, bar.id, settings)
        target = _target(model, args, observations, chains.discrete, settings.algorithm)  # while it runs
        chains_out, (positions, discrete), samples, stats, valid = outputs
        result = MCMCResult(
            _kept(samples, keep), None, stats, chains_out, positions, target, algorithm["max_tree_depth"] or None, discrete
        )
    if valid is not None and not isinstance(valid, jax.core.Tracer) and not np.all(valid):  # waits for the run
        check_initial_positions(target, start_positions(target, key, chains)[0], valid, init_radius)
    return result


@functools.partial(jax.jit, static_argnames=("model", "description", "settings"))
def _sample_model(model, description, dynamic, observations, key, chains, bar_id, settings):
    """``sample_chains`` on the model's unconstrained target, built here: a
    second call pays none of its Python (about 0.1 ms right after a run). The
    model and the Python parts of its arguments are static, hashable as the
    GFI's compiled entry points already require."""
    target = _target(model, join_static(dynamic, description), observations, chains.discrete, settings.algorithm)
    _check_dimension(chains, target)
    return sample_chains(target, key, chains, bar_id, settings)


def _initial_discrete(model, args, observations, paths, key, num_chains):
    """Per chain, the Gibbs choices' values in a draw from the model given the observations."""
    if not paths:
        return {}
    keys = jax.random.split(jax.random.fold_in(key, 2), num_chains)
    traces = jax.vmap(lambda k: model.generate(k, observations, args)[0])(keys)
    flat = by_path(traces.choices)
    missing = [format_address(p) for p in paths if p not in flat]
    if missing:
        raise AddressError(f"gibbs: {', '.join(map(repr, missing))} are not choices of the model")
    return from_paths({path: flat[path] for path in paths})


def _target(model, args, observations, discrete, algorithm):
    """The unconstrained target, the Gibbs choices held as observations (chain 0's values)."""
    first = jax.tree.map(lambda leaf: leaf[0], discrete)
    try:
        target = unconstrain(model, args, merge(observations or {}, first) if first else observations)
    except DiscreteLatentError as error:
        named = ", ".join(repr(format_address(a)) for a in error.addresses)
        raise DiscreteLatentError(
            f"{error} -- mcmc.{algorithm} moves continuous latents only: pass gibbs=[{named}] to update "
            "them by enumerative Gibbs before each transition",
            error.addresses,
        ) from None
    if target.dimension == 0:
        raise ValueError("the model has no continuous latent choices given these observations: there is nothing to sample")
    return target


def _checked_state(state, num_chains, make_target):
    """``state`` if it is a result's state with ``num_chains`` chains (its
    dimension is checked against the target where the target is built)."""
    if not isinstance(state, ChainState):
        raise TypeError(f"state={type(state).__name__}: pass the state of an earlier result (result.state)")
    if jnp.shape(state.kernel_state.position)[0] != num_chains:
        _check_dimension(state, make_target(), num_chains)
    return state


def _check_dimension(chains, target, num_chains=None):
    """A continued run's positions are (num_chains, the target's dimension)."""
    if isinstance(chains, FreshStart):
        return
    shape = tuple(jnp.shape(chains.kernel_state.position))
    needed = (shape[0] if num_chains is None else num_chains, target.dimension)
    if shape != needed:
        raise ValueError(
            f"state has positions of shape {shape}; this run needs {needed} "
            "(num_chains, the model's unconstrained dimension)"
        )


def _kept(samples, keep):
    if keep is None:
        return samples
    selection = select(*keep) if isinstance(keep, (list, tuple)) else keep
    return filter_choices(samples, selection)
