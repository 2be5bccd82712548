"""Models: a plan's `model.name` → a local directory, its fingerprint, and the embedded models
(`models.embedded`: `tiny-llama`, built locally, and `smollm2-135m`, converted from a registry
package). Below the plan (whose stage hash fingerprints the model) and everything that trains,
generates or evaluates."""

from tunegate.models.embedded import (
    EMBEDDED,
    EmbeddedModel,
    embedded,
    is_built,
    model_fingerprint,
    resolve_model,
)
from tunegate.models.smollm2 import SMOLLM2
from tunegate.models.tiny import TINY_LLAMA, cache_dir, ensure_tiny_llama

__all__ = [
    "EMBEDDED",
    "SMOLLM2",
    "TINY_LLAMA",
    "EmbeddedModel",
    "cache_dir",
    "embedded",
    "ensure_tiny_llama",
    "is_built",
    "model_fingerprint",
    "resolve_model",
]
