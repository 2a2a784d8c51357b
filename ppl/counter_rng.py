"""Counter-based random numbers for loops that need one draw per iteration:
the Threefry-2x32 hash (Salmon et al. 2011, "Parallel random numbers: as
easy as 1, 2, 3", 20 rounds) of a counter under a key, written in jnp.

Why not ``jax.random.uniform(jax.random.fold_in(key, i))``: JAX lowers
Threefry on CPU as a rolled five-iteration loop, so each draw inside a
``while_loop`` body runs some eighty small kernels; for NUTS on a small
model two such draws per leapfrog step cost a third of the step. Here the
twenty rounds are straight-line integer arithmetic that XLA fuses into one
kernel. The hash is JAX's own (``fold_in`` of a Threefry key gives the same
bits), only compiled differently.
"""

import jax
import jax.numpy as jnp

__all__ = ["fold_in", "key_words", "threefry_2x32", "uniform"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32's, alternating every four rounds
_PARITY = 0x1BD11BDA  # the key schedule's constant


def key_words(key):
    """Two uint32 words drawn from a JAX key (of any implementation), to key the hash.

    >>> key_words(jax.random.key(0)).dtype
    dtype('uint32')
    """
    return jax.random.bits(key, (2,), jnp.uint32)


def _rotate_left(x, r):
    return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def threefry_2x32(words, counter_high, counter_low):
    """The hash of the two-word counter ``(counter_high, counter_low)`` (uint32
    arrays of one shape) under the key ``words``: two uint32 arrays.

    >>> key = jax.random.key(7, impl="threefry2x32")
    >>> bits = threefry_2x32(jax.random.key_data(key), jnp.uint32(0), jnp.uint32(5))
    >>> bool(jnp.all(jnp.stack(bits) == jax.random.key_data(jax.random.fold_in(key, 5))))
    True
    """
    schedule = (words[0], words[1], words[0] ^ words[1] ^ jnp.uint32(_PARITY))
    x0 = jnp.asarray(counter_high, jnp.uint32) + schedule[0]
    x1 = jnp.asarray(counter_low, jnp.uint32) + schedule[1]
    for group in range(5):  # four rounds, then the next round key
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3] + jnp.uint32(group + 1)
    return x0, x1


def uniform(bits, dtype):
    """A uniform draw on [0, 1) from the hash's two words: 24 random bits for
    float32 (53 for float64), so it is exact in ``dtype`` and never 1.

    >>> u = uniform(threefry_2x32(key_words(jax.random.key(0)), jnp.uint32(0), jnp.arange(4, dtype=jnp.uint32)), jnp.float32)
    >>> u.shape, bool(jnp.all((u >= 0) & (u < 1)))
    ((4,), True)
    """
    dtype = jnp.promote_types(dtype, jnp.float32)
    high, low = bits
    if jnp.finfo(dtype).nmant >= 52:
        return ((high >> 5).astype(dtype) * 2.0**26 + (low >> 6).astype(dtype)) * 2.0**-53
    return (high >> 8).astype(dtype) * 2.0**-24


def fold_in(key, data):
    """``jax.random.fold_in(key, data)`` (the same key) for a Threefry key,
    as one fused kernel rather than JAX's rolled loop: chains that fold the
    transition count into their key pay it every transition, and every
    choice of a model folds its address into its caller's key. Other keys
    (other implementations, raw uint32 keys) go to ``jax.random.fold_in``,
    as do batches of keys (which it refuses, as for any key).

    >>> key = jax.random.key(3)
    >>> bool(jnp.all(jax.random.key_data(fold_in(key, 9)) == jax.random.key_data(jax.random.fold_in(key, 9))))
    True
    """
    typed = jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key)
    if not typed or jnp.ndim(key) or jax.random.key_impl(key) != "threefry2x32":
        return jax.random.fold_in(key, data)
    words = jax.random.key_data(key)
    high, low = threefry_2x32(words, jnp.uint32(0), jnp.asarray(data).astype(jnp.uint32))
    return jax.random.wrap_key_data(jnp.stack([high, low]), impl="threefry2x32")
