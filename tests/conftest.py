"""Suite-wide settings.

Every compiled XLA CPU executable keeps memory mappings, and the suite
compiles thousands of programs in one process: without freeing them it
passes Linux's default ``vm.max_map_count`` (65530), and XLA segfaults while
compiling. Each test module therefore drops JAX's compilation caches when it
ends (later modules compile what they need again).
"""

import gc

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()
