"""Composition of trace kernels, in the manner of optax's ``chain``:
``cycle`` (a sweep), ``mixture`` (one kernel at random per step), and
``on_trace`` (a kernel on positions, such as HMC or NUTS, moving a block of
continuous addresses of the trace: NumPyro's HMCGibbs, as a composition).

Design: trace kernels share one trace. A composed kernel's state carries
that trace only (``CycleState(trace)``, ...), and at each step every
sub-kernel's state is rebuilt from the current trace by its own ``init``,
stepped, and its trace read back (``state.trace``). A tuple of sub-kernel
states, as optax keeps, would hold one stale copy of the trace per
sub-kernel; a trace kernel's state is a function of its trace (``init`` only
wraps it), so rebuilding it costs nothing. A composed kernel is again a
trace kernel: cycles of mixtures of blocks nest freely. Infos are kept per
sub-kernel (``CycleInfo(infos)``, ``MixtureInfo(index, infos)``).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ppl.choicemap import by_path, filter_choices, flatten, from_paths
from ppl.errors import AddressError
from ppl.inference.mcmc.kernel import Kernel
from ppl.inference.mcmc.model_sites import model_sites
from ppl.inference.mcmc.trace_kernels import as_selection
from ppl.transforms import unconstrain

__all__ = ["CycleState", "CycleInfo", "MixtureState", "MixtureInfo", "BlockState", "BlockInfo", "cycle", "mixture", "on_trace"]


class CycleState(NamedTuple):
    trace: Any


class CycleInfo(NamedTuple):
    """The sub-kernels' infos, in order."""

    infos: tuple


class MixtureState(NamedTuple):
    trace: Any


class MixtureInfo(NamedTuple):
    """``index``: the kernel taken; ``infos``: every kernel's info, zeros for those not taken."""

    index: Any
    infos: tuple


class BlockState(NamedTuple):
    trace: Any


class BlockInfo(NamedTuple):
    """The position kernel's info of its one step."""

    info: Any


def cycle(*kernels):
    """One step of each trace kernel in turn (a Gibbs sweep). Each must keep
    the target invariant; the cycle then does too.

    ``init(trace) -> CycleState``; ``step(key, state) -> (CycleState, CycleInfo)``.

    >>> @ppl.gen
    ... def model():
    ...     z = ppl.sample("z", dist.Bernoulli(0.5))
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu + z, 1.0))
    >>> mcmc = ppl.inference.mcmc
    >>> sweep = mcmc.cycle(mcmc.gibbs(model, "z"), mcmc.mh(model, "mu"))
    >>> trace, _ = model.generate(jax.random.key(0), {"y": 1.0}, ())
    >>> state, info = jax.jit(sweep.step)(jax.random.key(1), sweep.init(trace))
    >>> len(info.infos), float(state.trace.choices["y"])
    (2, 1.0)
    """
    if not kernels:
        raise TypeError("cycle takes at least one kernel")

    def step(key, state):
        trace, infos = state.trace, []
        for kernel, kernel_key in zip(kernels, jax.random.split(key, len(kernels))):
            sub_state, info = kernel.step(kernel_key, kernel.init(trace))
            trace = sub_state.trace
            infos.append(info)
        return CycleState(trace), CycleInfo(tuple(infos))

    return Kernel(CycleState, step)


def mixture(kernels, weights):
    """At each step one trace kernel, picked at random with probabilities
    proportional to ``weights`` (independently of the state). Each kernel
    must keep the target invariant; the mixture then does too. Under
    ``jax.vmap`` over chains every kernel runs and one result is selected.

    ``init(trace) -> MixtureState``; ``step(key, state) -> (MixtureState, MixtureInfo)``.

    >>> @ppl.gen
    ... def model():
    ...     mu = ppl.sample("mu", dist.Normal(0.0, 1.0))
    ...     ppl.sample("y", dist.Normal(mu, 1.0))
    >>> mcmc = ppl.inference.mcmc
    >>> @ppl.gen
    ... def small_step(trace):
    ...     ppl.sample("mu", dist.Normal(trace.choices["mu"], 0.1))
    >>> kernel = mcmc.mixture([mcmc.mh(model, "mu"), mcmc.mh(model, proposal=small_step)], [0.2, 0.8])
    >>> trace, _ = model.generate(jax.random.key(0), {"y": 1.0}, ())
    >>> state, info = jax.jit(kernel.step)(jax.random.key(1), kernel.init(trace))
    >>> info.index.shape, len(info.infos)
    ((), 2)
    """
    kernels = tuple(kernels)
    weights = jnp.asarray(weights)
    if not kernels or jnp.shape(weights) != (len(kernels),):
        raise ValueError(f"mixture takes a non-empty list of kernels and one weight per kernel; got {len(kernels)} kernels, weights of shape {jnp.shape(weights)}")

    def step(key, state):
        choice_key, kernel_key = jax.random.split(key)
        index = jax.random.categorical(choice_key, jnp.log(weights))
        shapes = [jax.eval_shape(lambda s, k=kernel: k.step(kernel_key, k.init(s)), state.trace)[1] for kernel in kernels]

        def branch(i):
            def run(trace):
                sub_state, info = kernels[i].step(kernel_key, kernels[i].init(trace))
                zeros = [jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape) for shape in shapes]
                return sub_state.trace, tuple(info if j == i else zeros[j] for j in range(len(kernels)))

            return run

        trace, infos = jax.lax.switch(index, [branch(i) for i in range(len(kernels))], state.trace)
        return MixtureState(trace), MixtureInfo(index, infos)

    return Kernel(MixtureState, step)


def on_trace(model, addresses, make_kernel):
    """A kernel on positions, moving the block ``addresses`` (continuous
    latent choices: a ``ppl.Selection``, an address or a list of them) of
    the trace, the other choices held fixed.

    At each step the model is conditioned on the trace's choices outside the
    block (``ppl.transforms.unconstrain(model, trace.args, observations=...)``:
    a log density on R^n of the block, with the Jacobians of its bijections),
    ``make_kernel(log_density_fn) -> Kernel`` builds the position kernel
    (BlackJAX's shape: ``init(position)``, a state with a ``position``
    field), which starts from the block's current position and takes one
    step; the new position is constrained back and written into the trace
    with ``update``, so the trace's log density stays right. With ``gibbs``
    on the discrete choices, in a ``cycle``, this is NumPyro's HMCGibbs. The
    position kernel's state is rebuilt every step (its target moves with the
    other choices); its settings (step size, mass matrix) live in
    ``make_kernel``.

    ``init(trace) -> BlockState``; ``step(key, state) -> (BlockState, BlockInfo)``.

    >>> class Stay(NamedTuple):  # a position kernel that stays, reporting the log density
    ...     position: jax.Array
    >>> make_kernel = lambda log_density_fn: ppl.inference.mcmc.Kernel(Stay, lambda key, state: (state, log_density_fn(state.position)))
    >>> @ppl.gen
    ... def model():
    ...     scale = ppl.sample("scale", dist.HalfNormal(1.0))
    ...     ppl.sample("y", dist.Normal(0.0, scale))
    >>> trace, _ = model.generate(jax.random.key(0), {"y": 0.5}, ())
    >>> kernel = ppl.inference.mcmc.on_trace(model, "scale", make_kernel)
    >>> state, info = jax.jit(kernel.step)(jax.random.key(1), kernel.init(trace))
    >>> bool(jnp.isclose(state.trace.choices["scale"], trace.choices["scale"]))
    True
    >>> bool(jnp.isclose(info.info, trace.log_density + jnp.log(trace.choices["scale"])))  # + log |J| of exp
    True
    """
    selection = as_selection(addresses)

    def step(key, state):
        kernel_key, update_key = jax.random.split(key)
        trace = state.trace
        target = block_target(model, trace, selection)
        kernel = make_kernel(target.log_density)
        position_state, info = kernel.step(kernel_key, kernel.init(target.unconstrain(trace.choices)))
        block, _ = target.constrain(position_state.position)
        new_trace, _, _ = model.update(update_key, trace, block, trace.args)
        return BlockState(new_trace), BlockInfo(info)

    return Kernel(BlockState, step)


def block_target(model, trace, selection):
    """``model`` conditioned on the trace's choices outside ``selection``
    (factors left out: they are no choice), as an ``Unconstrained`` target
    whose position is the block's.

    >>> @ppl.gen
    ... def model():
    ...     a = ppl.sample("a", dist.Normal(0.0, 1.0))
    ...     ppl.sample("b", dist.Normal(a, 1.0))
    >>> trace = model.simulate(jax.random.key(0), ())
    >>> [latent.address for latent in block_target(model, trace, ppl.select("a")).latents]
    [('a',)]
    """
    if not filter_choices(trace.choices, selection):
        raise AddressError(f"on_trace: {selection!r} selects no choice of the trace; its choices: {', '.join(map(repr, flatten(trace.choices)))}")
    factors = {address for address, site in model_sites(model, trace.args).items() if site.is_factor}
    outside = {p: v for p, v in by_path(trace.choices).items() if not selection.contains(p) and p not in factors}
    return unconstrain(model, trace.args, from_paths(outside))
