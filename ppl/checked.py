"""``ppl.checked``: support and finiteness checks that raise inside ``jax.jit``.

Under a user's ``jax.jit`` the values are not known while tracing, so an
observed value outside its distribution's support gets log density ``-inf``
and a NaN argument flows on; neither raises. ``checked(fn)`` compiles ``fn``
with those checks staged into the program (``jax.experimental.checkify``)
and raises, after the call, the first one that failed.
"""

import contextvars
import functools

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from ppl.errors import ConstraintError
from ppl.trace import join_static, split_static

__all__ = ["checked", "checking", "check"]

_checking = contextvars.ContextVar("ppl_checking", default=False)


def checking():
    """True while ``checked`` traces a function: checks are then staged."""
    return _checking.get()


def check(predicate, message, **values):
    """Stage ``checkify.check(predicate, message, **values)`` when checking."""
    if _checking.get():
        checkify.check(jnp.all(predicate), message, **values)


def checked(fn):
    """``fn``, jitted, raising ``ppl.ConstraintError`` when a traced observed
    value lies outside its support or a traced argument is not finite.

    It is compiled once per argument shapes (Python values in the arguments
    stay static); call it directly rather than inside another ``jax.jit``.

    >>> @ppl.gen
    ... def model():
    ...     ppl.sample("count", dist.Poisson(3.0))
    >>> weight = ppl.checked(lambda count: model.generate(jax.random.key(0), {"count": count}, ())[1])
    >>> float(weight(2.0)) < 0
    True
    >>> weight(-1.0)
    Traceback (most recent call last):
    ...
    ppl.errors.ConstraintError: address 'count': observed value outside the support of Poisson ... -1.0 ...failed)
    """

    @functools.partial(jax.jit, static_argnums=0)
    def compiled(description, *dynamic):
        return checkify.checkify(lambda *d: fn(*join_static(d, description)), errors=checkify.user_checks)(*dynamic)

    @functools.wraps(fn)
    def run(*args):
        dynamic, description = split_static(args)
        token = _checking.set(True)
        try:
            error, out = compiled(description, *dynamic)
        finally:
            _checking.reset(token)
        message = error.get()
        if message:
            raise ConstraintError(message)
        return out

    return run
