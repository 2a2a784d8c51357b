"""The examples in the docstrings run (every public function has one)."""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import optax
import pytest

import ppl
import ppl.inference
import ppl.transforms
from ppl import dist
from ppl.inference import mcmc, smc, vi


def _modules():
    names = []
    for package in (ppl, ppl.transforms, ppl.inference):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            names.append(info.name)
    return sorted(set(names))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"jax": jax, "jnp": jnp, "ppl": ppl, "dist": dist, "vi": vi, "mcmc": mcmc, "smc": smc, "optax": optax}
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_every_module_declares_all():
    for name in _modules():
        assert hasattr(importlib.import_module(name), "__all__"), name
