"""Running many chains in one compiled loop: ``lax.scan`` over transitions,
with the chains vectorised (``"vmap"``: every transition of all chains at
once; NUTS then waits for the chain with the longest trajectory) or one
after the other (``"sequential"``: ``lax.map`` over chains, each its own
scan); ``"sharded"`` splits the chains across devices and vmaps within each
(``shard_map`` in ``run_sharded``).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from ppl.inference.mcmc.progress import tick

__all__ = ["CHAIN_METHODS", "scan_chains", "run_sharded", "check_chain_method"]

CHAIN_METHODS = ("vmap", "sequential", "sharded")


def check_chain_method(chain_method, num_chains):
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method={chain_method!r}: choose one of {CHAIN_METHODS}")
    if isinstance(num_chains, bool) or not isinstance(num_chains, (int, np.integer)) or num_chains < 1:
        raise ValueError(f"num_chains={num_chains!r}: need an integer >= 1")
    if chain_method == "sharded" and num_chains % jax.device_count():
        raise ValueError(
            f"chain_method='sharded' splits num_chains={num_chains} across {jax.device_count()} devices: "
            "use a multiple of the device count"
        )


def _part():
    """This device's index inside ``run_sharded``, else 0."""
    try:
        return jax.lax.axis_index("chains")
    except NameError:
        return jnp.zeros((), jnp.int32)


def scan_chains(transition, carry, length, chain_method, bar_id, phase, done_before, xs=None):
    """Run ``transition(chain_carry, x) -> (chain_carry, (output, is_divergent))``
    ``length`` times for every chain of ``carry`` (leading axis: chains).

    Returns the final carry and the outputs with leading axes (chains, length).
    ``done_before`` counts transitions per chain made in earlier phases (for the
    bar ``bar_id``; None for none).

    >>> step = lambda c, x: (c + 1.0, (c, c < 0))
    >>> carry, (outputs, divergent) = scan_chains(step, jnp.zeros(2), 3, "vmap", None, 0, 0)
    >>> outputs.tolist()
    [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]
    """
    iterations = jnp.arange(length)
    inputs = iterations if xs is None else (iterations, xs)
    num_chains = jax.tree.leaves(carry)[0].shape[0]

    def split(inp):
        return (inp, None) if xs is None else inp

    if chain_method == "sequential" or num_chains == 1:  # one chain: no batching of its while loops

        def one_chain(chain):
            chain_carry, index = chain

            def body(state, inp):
                (chain_carry, divergences), (i, x) = state, split(inp)
                chain_carry, (output, divergent) = transition(chain_carry, x)
                divergences = divergences + divergent.astype(jnp.int32)
                if bar_id is not None:
                    tick(bar_id, index, phase, i, length, done_before + i + 1, divergences)
                return (chain_carry, divergences), (output, divergent)

            (chain_carry, _), outputs = jax.lax.scan(body, (chain_carry, jnp.zeros((), jnp.int32)), inputs)
            return chain_carry, outputs

        if num_chains == 1:  # no loop around the one chain's scan
            chain_carry, outputs = one_chain((jax.tree.map(lambda a: a[0], carry), jnp.zeros((), jnp.int32)))
            return jax.tree.map(lambda a: a[None], (chain_carry, outputs))
        return jax.lax.map(one_chain, (carry, jnp.arange(num_chains)))

    def body(state, inp):
        (chains_carry, divergences), (i, x) = state, split(inp)
        chains_carry, (output, divergent) = jax.vmap(transition, in_axes=(0, None))(chains_carry, x)
        divergences = divergences + jnp.sum(divergent, dtype=jnp.int32)
        if bar_id is not None:  # None: no progress bar, nothing compiled for it
            tick(bar_id, _part(), phase, i, length, (done_before + i + 1) * num_chains, divergences)
        return (chains_carry, divergences), (output, divergent)

    (carry, _), outputs = jax.lax.scan(body, (carry, jnp.zeros((), jnp.int32)), inputs)
    return carry, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), outputs)


def run_sharded(program, *chain_arguments):
    """``program(*chain_arguments)`` with every argument's leading (chain)
    axis split across all devices: each device runs its chains (vmapped inside
    ``program``); outputs are gathered along the chain axis.

    >>> run_sharded(lambda x: x * 2, jnp.arange(jax.device_count()))[0]
    Array(0, dtype=int32)
    """
    mesh = Mesh(np.array(jax.devices()), ("chains",))
    spec = PartitionSpec("chains")
    return jax.shard_map(program, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(*chain_arguments)
