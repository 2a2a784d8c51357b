"""Suite-wide settings.

Every compiled XLA CPU executable keeps memory mappings, and the suite
compiles thousands of programs in one process: without freeing them it
passes Linux's default ``vm.max_map_count`` (65530), and XLA segfaults while
compiling. Each test module therefore drops JAX's compilation caches when it
ends (later modules compile what they need again).

The suite's time goes mostly to compiling small programs, so it compiles them
with LLVM's optimisations off (``--xla_backend_optimization_level=0``: about
a quarter less time here). That changes how fast the machine code runs, not
what it computes: XLA's own passes (fusion, layout) and its floating-point
semantics (no fast math) are the same. Subprocesses started by the tests
inherit it; the benchmarks and examples run with the default. Set the flag
in ``XLA_FLAGS`` yourself to override it.
"""

import gc
import os

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (after XLA_FLAGS: XLA reads them when JAX starts its backend)
import pytest


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()
