"""``ppl.counter_rng.fold_in`` gives exactly ``jax.random.fold_in``'s keys
(so every site key, hence every random stream, is what it was), for every
kind of key a user may pass, inside ``vmap`` and ``jit`` too."""

import jax
import jax.numpy as jnp
import numpy as np

from ppl.counter_rng import fold_in


def _bits(key):
    return np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)


def test_fold_in_equals_jax_for_every_kind_of_key():
    data = jnp.array([0, 1, 7, 2**31 - 1], jnp.uint32)
    for key in (jax.random.key(3), jax.random.PRNGKey(3), jax.random.key(3, impl="rbg")):
        for d in data:
            np.testing.assert_array_equal(_bits(fold_in(key, d)), _bits(jax.random.fold_in(key, d)))
    keys = jax.random.split(jax.random.key(5), 6)
    ours = jax.jit(jax.vmap(fold_in))(keys, jnp.arange(6))
    theirs = jax.vmap(jax.random.fold_in)(keys, jnp.arange(6))
    np.testing.assert_array_equal(_bits(ours), _bits(theirs))
