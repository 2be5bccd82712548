"""Models: a plan's `model.name` → a local directory, its fingerprint, and the embedded
`tiny-llama` (`models.tiny`). Below the plan (whose stage hash fingerprints the model) and
everything that trains, generates or evaluates."""

from tunegate.models.tiny import (
    TINY_LLAMA,
    cache_dir,
    ensure_tiny_llama,
    model_fingerprint,
    resolve_model,
)

__all__ = ["TINY_LLAMA", "cache_dir", "ensure_tiny_llama", "model_fingerprint", "resolve_model"]
