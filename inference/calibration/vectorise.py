"""Running one function over many simulations: one compiled ``vmap`` when
the function allows it (split across devices when there are several),
else one call after another with a progress bar."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from tqdm import tqdm  # text bar everywhere, as mcmc's (tqdm.auto wants ipywidgets in Jupyter)

__all__ = ["map_simulations", "VECTORIZE"]

VECTORIZE = ("auto", True, False)


def map_simulations(fn, keys, inputs, *, vectorize="auto", batch_size=None, progress=True, description="simulations"):
    """``fn(key, input)`` for each row of ``keys`` and of ``inputs`` (a pytree
    with the same leading axis); the outputs stacked on a leading axis.

    ``vectorize``: True runs ``jax.vmap(fn)`` compiled (``batch_size`` rows at a
    time; all of them by default), sharded over the devices when there are
    several; False calls ``fn`` on one row at a time; "auto" tries the first
    and falls back to the second when ``fn`` cannot be traced (it converts a
    traced value to a Python or NumPy one, as ``vi.fit`` does). ``fn`` must be
    hashable for its compiled program to be reused across calls.

    >>> double = lambda key, x: 2 * x
    >>> map_simulations(double, jax.random.split(jax.random.key(0), 3), jnp.arange(3.0), progress=False).tolist()
    [0.0, 2.0, 4.0]
    """
    if vectorize not in VECTORIZE:
        raise ValueError(f"vectorize={vectorize!r}: choose 'auto', True or False")
    num = keys.shape[0]
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r}: need a positive int")
    if vectorize is not False:
        try:
            return _vectorised(fn, keys, inputs, min(batch_size or num, num), progress, description)
        except jax.errors.JAXTypeError:
            if vectorize is True:
                raise
    return _sequential(fn, keys, inputs, progress, description)


def _vectorised(fn, keys, inputs, batch_size, progress, description):
    num, devices = keys.shape[0], jax.device_count()
    size = -(-batch_size // devices) * devices  # every device gets as many rows
    starts = range(0, num, size)
    outputs = []
    with tqdm(total=num, desc=description, disable=not progress or len(starts) == 1) as bar:
        for start in starts:
            rows = np.minimum(np.arange(start, start + size), num - 1)  # a short last batch repeats its last row
            batch = _compiled_batch(fn, devices > 1, keys[rows], jax.tree.map(lambda x: x[rows], inputs))
            outputs.append(jax.tree.map(lambda x: x[: min(size, num - start)], batch))
            bar.update(min(size, num - start))
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outputs) if len(outputs) > 1 else outputs[0]


def _program(fn, sharded):
    mapped = jax.vmap(fn)
    if not sharded:
        return mapped
    mesh = Mesh(np.array(jax.devices()), ("simulations",))
    spec = PartitionSpec("simulations")
    return jax.shard_map(mapped, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


_compiled_batch = jax.jit(lambda fn, sharded, keys, inputs: _program(fn, sharded)(keys, inputs), static_argnums=(0, 1))


def _sequential(fn, keys, inputs, progress, description):
    outputs = []
    for i in tqdm(range(keys.shape[0]), desc=description, disable=not progress):
        outputs.append(fn(keys[i], jax.tree.map(lambda x: x[i], inputs)))
    return jax.tree.map(lambda *rows: jnp.stack(rows), *outputs)
