"""``@ppl.gen`` functions, ``ppl.sample`` and ``ppl.factor``.

While a generative function's body runs, a handler records what each
``ppl.sample`` does. The handler is bookkeeping only: addresses, values,
densities. Randomness comes from the explicit key: the key of the choice at
address ``a`` is ``fold_in(key, crc32(a))``, a pure function of the caller's
key and the address, so no handler carries generator state and the same
address gets the same randomness in every GFI method.
"""

import contextvars
import inspect
import functools
import zlib

import jax.numpy as jnp
from numpyro.distributions import Distribution

from ppl._jax import trace_state
from ppl.choicemap import NONE
from ppl.counter_rng import fold_in
from ppl.core import Call, Edit, GenerativeFunction, Prev
from ppl.distribution import DistributionGF
from ppl.factor_primitive import bind_factor
from ppl.sites import add_reverse
from ppl.errors import AddressError, ArgumentCountError, check_address_name, control_flow_error, format_address, unknown_addresses_error

__all__ = ["gen", "Gen", "sample", "factor", "site_key"]

_handler = contextvars.ContextVar("ppl_handler", default=None)


def site_key(key, name):
    """The key of the choice ``name`` under ``key``."""
    return None if key is None else fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def as_call(thing, address):
    if isinstance(thing, Call):
        return thing
    if isinstance(thing, Distribution):
        return Call(DistributionGF(thing), ())
    if isinstance(thing, GenerativeFunction):
        raise TypeError(f"ppl.sample({address!r}, gf): call the generative function with its arguments, gf(*args)")
    raise TypeError(
        f"ppl.sample({address!r}, ...) takes a NumPyro distribution or a generative function applied to "
        f"its arguments, got {type(thing).__name__}"
    )


class _Handler:
    """Records one execution of a @gen body."""

    def __init__(self, key, constraints, prev, selection, path):
        self.key, self.constraints, self.prev = key, constraints or {}, prev
        self.selection, self.path = selection, path
        self.sites = {}
        self.log_density = 0.0
        self.kept = 0.0
        self.reverse = 0.0
        self.trace_state = trace_state()

    def _claim(self, name):
        check_address_name(name, self.path)
        if name in self.sites:
            raise AddressError(f"address {format_address(self.path + (name,))!r} is used twice in one execution")
        if trace_state() != self.trace_state:
            raise control_flow_error(format_address(self.path + (name,)))

    def _prev(self, name):
        if self.prev is None or name not in self.prev.choices:
            return None
        used = self.prev.used[name] if isinstance(self.prev.used, dict) else self.prev.used
        return Prev(self.prev.choices[name], used)

    def visit(self, name, call):
        self._claim(name)
        edit = call.gf._edit(
            site_key(self.key, name),
            tuple(call.args),
            self.constraints.get(name),
            self._prev(name),
            self.selection.sub(name),
            self.path + (name,),
        )
        self.sites[name] = edit
        self.log_density = self.log_density + edit.log_density
        self.kept = self.kept + edit.kept_log_density
        self.reverse = add_reverse(self.reverse, edit.reverse_log_density)
        return edit.retval

    def factor(self, name, log_weight):
        self._claim(name)
        log_weight = bind_factor(log_weight, self.path + (name,))
        total = jnp.sum(log_weight)
        self.sites[name] = Edit(log_weight, True, jnp.zeros((), jnp.result_type(float)), log_weight, total, total)
        self.log_density = self.log_density + total
        self.kept = self.kept + total

    def finish(self, retval):
        unknown = set(self.constraints) - set(self.sites)
        if unknown:
            raise unknown_addresses_error(unknown, self.sites, self.path)
        field = lambda f: {name: getattr(edit, f) for name, edit in self.sites.items()}
        # Densities are in JAX's default float (float64 under jax_enable_x64),
        # so every branch and step of a combinator agrees on their dtype.
        log_density = jnp.asarray(self.log_density, dtype=jnp.result_type(float))
        kept = jnp.asarray(self.kept, dtype=jnp.result_type(float))
        return Edit(field("choices"), field("used"), field("site_log_densities"), retval, log_density, kept)


def _current(address):
    handler = _handler.get()
    if handler is None:
        raise RuntimeError(
            f"ppl.sample/ppl.factor({address!r}) was called outside a generative function: call it inside "
            "a @ppl.gen function run by a GFI method (simulate, generate, ...)"
        )
    return handler


def sample(address, thing, **kwargs):
    """Make the random choice ``address`` from a distribution, or call a
    generative function whose choices nest under ``address``.

    >>> @gen
    ... def model():
    ...     mu = sample("mu", dist.Normal(0.0, 1.0))
    ...     return sample("y", dist.Normal(mu, 1.0))
    """
    if "obs" in kwargs:
        raise TypeError(
            f"ppl.sample({address!r}, ..., obs=...): ppl conditions by choice maps; pass "
            f"{{{address!r}: value}} as the constraints/observations of generate or importance"
        )
    if kwargs:
        raise TypeError(f"ppl.sample got unexpected keyword arguments {sorted(kwargs)}")
    return _current(address).visit(address, as_call(thing, address))


def factor(address, log_weight):
    """Add ``log_weight`` (summed) to the log density, like Stan's ``target +=``.

    An always-observed term: every density and weight counts it; its value
    shows in the trace under ``address``.
    """
    _current(address).factor(address, log_weight)


class Gen(GenerativeFunction):
    """A generative function written as a Python function (see ``gen``)."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __repr__(self):
        return f"gen({getattr(self.fn, '__qualname__', self.fn)})"

    def _edit(self, key, args, constraints, prev, selection, path):
        if constraints is not None and not isinstance(constraints, dict):
            raise AddressError(
                f"address {format_address(path)!r} is a generative function: constrain its choices with a "
                f"dict, got {type(constraints).__name__}"
            )
        handler = _Handler(key, constraints, prev, selection or NONE, path)
        token = _handler.set(handler)
        try:
            retval = self.fn(*args)
        except TypeError as error:
            _check_arguments(self, args, path, error)
            raise
        finally:
            _handler.reset(token)
        return handler.finish(retval)._replace(reverse_log_density=handler.reverse)


def _check_arguments(gf, args, path, error):
    """Raise ``ArgumentCountError`` if ``args`` do not fit ``gf``'s signature
    (``error`` came from the call); otherwise return and let ``error`` stand."""
    try:
        signature = inspect.signature(gf.fn)
        signature.bind(*args)
    except TypeError:
        where = f" at address {format_address(path)!r}" if path else ""
        raise ArgumentCountError(
            f"{gf!r}{where} takes {signature} but was called with {len(args)} argument(s); "
            "args is the tuple of its arguments, e.g. (xs,)"
        ) from error
    except ValueError:  # no signature to read (a builtin): nothing to add
        return


def gen(fn):
    """Make a generative function of a Python function that calls ``ppl.sample``.

    >>> import jax, ppl
    >>> from ppl import dist
    >>> @ppl.gen
    ... def model(x):
    ...     slope = ppl.sample("slope", dist.Normal(0.0, 1.0))
    ...     return ppl.sample("y", dist.Normal(slope * x, 0.1))
    >>> trace = model.simulate(jax.random.key(0), (2.0,))
    >>> sorted(trace.choices)
    ['slope', 'y']
    """
    return Gen(fn)
