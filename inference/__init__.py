"""Inference algorithms built from generative functions: ``import ppl.inference``."""

from ppl.inference.importance import ImportanceResult, importance

__all__ = ["importance", "ImportanceResult"]
