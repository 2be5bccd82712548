"""Sampled generation computes each prompt once and shares its cache with its n samples
(`generate.shared_prefix`); what it samples must be what the model says after the whole prompt."""

from __future__ import annotations

import pytest

from tunegate.generate import Sampling, TransformersBackend, load_for_inference
from tunegate.models import resolve_model
from tunegate.plan import QuantizationConfig

# Prompts of different lengths: one batch left-pads the shorter ones.
PROMPTS = [
    "def add(a, b):\n",
    "Write a function that returns the longest word in a sentence.\ndef longest(s):\n",
    "# SQL\nSELECT",
]


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    directory = resolve_model("tiny-llama")
    model, tokenizer = load_for_inference(directory, directory, QuantizationConfig(method="lora"))
    return TransformersBackend(model, tokenizer, name="tiny-llama")


def test_samples_from_a_shared_prefix_follow_the_whole_prompt(backend: TransformersBackend) -> None:
    """At a temperature near zero every sample is the greedy answer: a cache with wrong
    positions or padding would change what follows the prompt."""
    greedy = backend.generate(PROMPTS, Sampling(max_new_tokens=12))
    sampled = backend.generate(PROMPTS, Sampling(n=3, temperature=1e-4, max_new_tokens=12))
    for want, got in zip(greedy, sampled, strict=True):
        assert got == want * 3


def test_samples_are_reproducible_and_differ_between_seeds(backend: TransformersBackend) -> None:
    sampling = Sampling(n=4, temperature=1.0, seed=7, max_new_tokens=12)
    first = backend.generate(PROMPTS, sampling)
    assert backend.generate(PROMPTS, sampling) == first
    assert all(len(samples) == 4 for samples in first)
    other = backend.generate(PROMPTS, Sampling(n=4, temperature=1.0, seed=8, max_new_tokens=12))
    assert other != first
