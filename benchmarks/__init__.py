"""Side-by-side performance runs: ppl vs hand-written JAX vs NumPyro (see README.md)."""
