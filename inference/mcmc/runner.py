"""``mcmc.run``: any kernel (trace kernels, gradient kernels, compositions),
many chains, one compiled loop, the same result type as ``mcmc.nuts``."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import Selection, filter_choices, select
from ppl.core import as_key
from ppl.inference.mcmc.chains import check_chain_method, run_sharded, scan_chains
from ppl.inference.mcmc.progress import ProgressBar
from ppl.inference.mcmc.result import MCMCResult

__all__ = ["RunState", "run"]

# Info fields stored under ArviZ's sample_stats names.
_ARVIZ_NAMES = {"is_divergent": "diverging", "num_integration_steps": "n_steps"}


class RunState(NamedTuple):
    """The chains' kernel states (leading axis: chains) and their transition counts."""

    kernel_state: Any
    iteration: jax.Array


def _draw(state, keep):
    """What a draw keeps: a trace kernel's choices (those in ``keep``, if
    given) and return value, else the position."""
    trace = getattr(state, "trace", None)
    if trace is not None:
        return (trace.choices if keep is None else filter_choices(trace.choices, keep)), trace.retval
    return getattr(state, "position", state), None


def _stats(info, prefix=""):
    """A kernel's info as flat stats: NamedTuple fields by name (ArviZ's where
    they differ), the sub-kernels of a composition as ``"0/..."``, ``"1/..."``
    (the ``infos`` / ``info`` wrappers of ``cycle``, ``mixture`` and
    ``on_trace`` dropped), and ``"diverging"``: any sub-kernel's divergence."""
    if isinstance(info, tuple) and not hasattr(info, "_asdict"):
        flat = {}
        for i, sub in enumerate(info):
            flat.update(_stats(sub, f"{prefix}{i}/"))
    elif hasattr(info, "_asdict"):
        flat = {}
        for name, value in info._asdict().items():
            inner = prefix if name in ("infos", "info") else f"{prefix}{_ARVIZ_NAMES.get(name, name)}"
            flat.update(_stats(value, inner if name in ("infos", "info") else inner + "/") if _nested(value) else {inner: value})
    else:
        flat = {prefix.rstrip("/") or "info": info}
    if not prefix:
        divergent = [v for k, v in flat.items() if k.split("/")[-1] == "diverging" and k != "diverging"]
        if divergent:
            flat["diverging"] = jnp.any(jnp.stack([jnp.asarray(v, bool) for v in divergent]), axis=0)
    return flat


def _nested(value):
    return isinstance(value, tuple)


@functools.partial(jax.jit, static_argnames=("kernel", "num_samples", "thinning", "chain_method", "keep"))
def _run_chains(kernel, key, chains, bar_id, num_samples, thinning, chain_method, keep):
    chain_keys = jax.random.split(jax.random.fold_in(key, 0), chains.iteration.shape[0])

    def one_transition(carry, _):
        chain_key, chain = carry
        state, info = kernel.step(jax.random.fold_in(chain_key, chain.iteration), chain.kernel_state)
        return (chain_key, RunState(state, chain.iteration + 1)), _stats(info)

    def transition(carry, _):
        if thinning == 1:
            carry, kept = one_transition(carry, None)
            divergent = kept.get("diverging", jnp.array(False))
        else:
            carry, stats = jax.lax.scan(one_transition, carry, None, thinning)
            kept = jax.tree.map(lambda a: a[-1], stats)
            divergent = jnp.any(stats["diverging"]) if "diverging" in stats else jnp.array(False)
            if "diverging" in stats:
                kept["diverging"] = divergent
        return carry, ((_draw(carry[1].kernel_state, keep), kept), divergent)

    def program(chain_keys, chains):
        (_, chains), (draws, _) = scan_chains(
            transition, (chain_keys, chains), num_samples, chain_method, bar_id, 1, 0
        )
        return chains, draws

    if chain_method == "sharded":
        return run_sharded(program, chain_keys, chains)
    return program(chain_keys, chains)


def run(key, kernel, initial_states, num_samples, *, thinning=1, chain_method="vmap", progress=True, keep=None):
    """Run ``kernel`` (a ``Kernel``) from ``initial_states``: its states with a
    leading chain axis (``jax.vmap(kernel.init)(...)``), or the ``state`` of an
    earlier result of ``run`` to continue those chains (the same key continues
    the same random stream). Chain c's t-th transition uses
    ``fold_in(split(key, num_chains)[c], t)``.

    Returns an ``MCMCResult``: ``samples`` are a trace kernel's choices (all of
    them, the observed ones included, unless ``keep``: addresses or a
    ``ppl.Selection`` to store) and ``retvals`` its return values, else the
    states' positions; ``stats`` the kernel's info fields per draw (see
    ``_stats``: ``is_divergent`` as ``"diverging"``, compositions' parts as
    ``"0/acceptance_rate"``, ...).
    Compiled once per kernel object, shapes and settings: build the kernel once
    and reuse it.

    >>> kernel = mcmc.hmc_kernel(lambda x: -0.5 * jnp.sum(x**2), 0.2, jnp.ones(2), 10)
    >>> states = jax.vmap(kernel.init)(jnp.zeros((4, 2)))
    >>> result = mcmc.run(jax.random.key(0), kernel, states, 100, progress=False)
    >>> result.samples.shape, result.stats["acceptance_rate"].shape
    ((4, 100, 2), (4, 100))
    """
    key = as_key(key)
    chains = initial_states if isinstance(initial_states, RunState) else _fresh(initial_states)
    num_chains = int(chains.iteration.shape[0])
    check_chain_method(chain_method, num_chains)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r}: need an integer >= 1")
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((key, chains)))
    with ProgressBar(num_chains * num_samples, enabled=progress and not traced, description="sampling") as bar:
        chains, ((samples, retvals), stats) = _run_chains(
            kernel, key, chains, bar.id, num_samples, int(thinning), chain_method, _selection(keep)
        )
    return MCMCResult(samples, retvals, stats, chains)


def _selection(keep):
    if keep is None or isinstance(keep, Selection):
        return keep
    return select(*([keep] if isinstance(keep, str) else keep))


def _fresh(states):
    leaves = jax.tree.leaves(states)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ValueError("initial_states need a leading chain axis: build them with jax.vmap(kernel.init)(...)")
    return RunState(states, jnp.zeros((leaves[0].shape[0],), jnp.int32))
