"""ppl: probabilistic programming on JAX by program transformations.

>>> import jax, ppl
>>> from ppl import dist
>>> @ppl.gen
... def model():
...     return ppl.sample("x", dist.Normal(0.0, 1.0))
>>> model.simulate(jax.random.key(0), ()).choices["x"].shape
()
"""

from ppl import dist
from ppl.checked import checked
from ppl.choicemap import Selection, filter_choices, flatten, get, merge, select, select_all, unflatten
from ppl.combinators import Scan, Switch, Vmap, cond, mixture, switch, vmap_particles
from ppl.core import Call, GenerativeFunction, site_log_densities
from ppl.distribution import DistributionGF, as_gen
from ppl.errors import AddressError, ConstraintError, ControlFlowError, DiscreteLatentError
from ppl.gen import Gen, factor, gen, sample
from ppl.trace import Trace, format_trace

__all__ = [
    "dist",
    "gen",
    "sample",
    "factor",
    "cond",
    "switch",
    "mixture",
    "vmap_particles",
    "as_gen",
    "Trace",
    "format_trace",
    "Selection",
    "select",
    "select_all",
    "flatten",
    "unflatten",
    "merge",
    "filter_choices",
    "get",
    "site_log_densities",
    "checked",
    "GenerativeFunction",
    "Gen",
    "DistributionGF",
    "Vmap",
    "Scan",
    "Switch",
    "Call",
    "AddressError",
    "ConstraintError",
    "DiscreteLatentError",
    "ControlFlowError",
]


def __getattr__(name):
    # ppl.transforms and ppl.inference live in top-level folders (see pyproject's
    # package-dir); import them lazily so `import ppl` stays light.
    if name in ("transforms", "inference"):
        import importlib

        return importlib.import_module(f"ppl.{name}")
    raise AttributeError(f"module 'ppl' has no attribute {name!r}")
