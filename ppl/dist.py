"""NumPyro's distributions, re-exported: ``from ppl import dist``."""

from numpyro.distributions import *  # noqa: F401,F403
from numpyro.distributions import __all__  # noqa: F401
