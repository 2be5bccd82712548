"""Moved to `tunegate.models`: kept for the imports that still name this path
(`ladder`: resolve_model, `tracking`: cache_dir); import from `tunegate.models` instead."""

from tunegate.models import TINY_LLAMA, cache_dir, ensure_tiny_llama, resolve_model

__all__ = ["TINY_LLAMA", "cache_dir", "ensure_tiny_llama", "resolve_model"]
