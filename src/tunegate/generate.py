"""Generation: an arm's model on a list of prompts, greedy or `n` seeded samples per prompt.

Two backends, one interface (`Backend.generate`):
- `TransformersBackend`: in process, the base model with the arm's adapter reloaded from disk.
  Reloading rather than reusing the trainer's model is deliberate: it proves the saved adapter
  is complete (the original plan's "model saves to disk" and "inference works" checks are one act).
  Batched: prompts are sorted by length (less padding), and each forward pass carries several
  prompts × their `n` samples, up to `max_batch_sequences` rows; each prompt is computed once
  and its cache shared by its samples (`shared_prefix`).
- `EndpointBackend`: any OpenAI-compatible `/v1/completions` endpoint (vLLM, llama.cpp's
  server, `tunegate serve`, a hosted API), with `n` samples per request and bounded concurrency.

Sampling is reproducible for the same seed, prompts and batch size: each batch re-seeds from
(seed, its first prompt's position).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tunegate.errors import UserError
from tunegate.models import EMBEDDED, embedded, resolve_model
from tunegate.plan import QuantizationConfig

Progress = Callable[[int], None]  # called with the number of sequences just produced
MAX_BATCH_SEQUENCES = 64  # rows of one forward pass: prompts × samples per prompt


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0: greedy (n must be 1)
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 96
    stop: tuple[str, ...] = ()  # stop sequences, cut from the answer (EOS always stops)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("n > 1 samples need a temperature above 0 (greedy gives one answer)")


class Backend(Protocol):
    name: str

    def generate(
        self, prompts: list[str], sampling: Sampling, progress: Progress | None = None
    ) -> list[list[str]]:
        """`sampling.n` completions per prompt, in prompt order."""
        ...


class TransformersBackend:
    """A local model (and adapter) through `model.generate`, batched."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        max_batch_sequences: int = MAX_BATCH_SEQUENCES,
    ):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_batch_sequences = max_batch_sequences
        self._eos = eos_token_ids(model, tokenizer)

    def generate(
        self, prompts: list[str], sampling: Sampling, progress: Progress | None = None
    ) -> list[list[str]]:
        import torch
        from transformers import set_seed

        tok = self.tokenizer
        per_batch = max(1, self.max_batch_sequences // sampling.n)
        lengths = [len(tok(p).input_ids) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        results: list[list[str]] = [[] for _ in prompts]
        for start in range(0, len(order), per_batch):
            index = order[start : start + per_batch]
            enc = tok([prompts[i] for i in index], return_tensors="pt", padding=True).to(
                self.model.device
            )
            kwargs: dict[str, Any] = {"do_sample": False}
            if sampling.temperature > 0:
                set_seed(sampling.seed * 1_000_003 + index[0])
                kwargs = {
                    "do_sample": True,
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                }
            if sampling.stop:
                kwargs |= {"stop_strings": list(sampling.stop), "tokenizer": tok}
            with torch.inference_mode():
                inputs = shared_prefix(self.model, enc, sampling.n)
                out = self.model.generate(
                    **inputs,
                    **kwargs,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=self._eos,
                )
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            texts = [cut_at_stop(t, sampling.stop) for t in texts]
            for k, i in enumerate(index):
                results[i] = texts[k * sampling.n : (k + 1) * sampling.n]
            if progress is not None:
                progress(len(index) * sampling.n)
        return results


def shared_prefix(model: Any, enc: Any, n: int) -> dict[str, Any]:
    """`generate`'s inputs for `n` samples of each prompt in `enc` (left-padded), with each
    prompt computed once: all but its last token go through the model here, and the cache is
    copied to its n rows, so generation only computes the last prompt token onwards.
    `num_return_sequences=n` would repeat each prompt n times before the forward pass, and on
    long prompts with short answers that prefill is most of the work."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if n == 1 or ids.shape[1] < 2:
        return {"input_ids": ids, "attention_mask": mask}
    # Positions as `generate` derives them from the mask, so that the cached prefix and the
    # tokens generate computes after it agree.
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out = model(
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[:, :-1],
        use_cache=True,
    )
    # transformers 5.25 names the cache `cache`; earlier 5.x releases `past_key_values`.
    name = "cache" if getattr(out, "cache", None) is not None else "past_key_values"
    cache = getattr(out, name)
    cache.batch_repeat_interleave(n)
    return {
        "input_ids": ids.repeat_interleave(n, dim=0),
        "attention_mask": mask.repeat_interleave(n, dim=0),
        name: cache,
    }


def generation_steps(prompts: int, sampling: Sampling, max_batch_sequences: int) -> tuple[int, int]:
    """(row steps, batch steps) `TransformersBackend.generate` runs for `prompts` prompts at
    most: sequences × max_new_tokens, and batches × max_new_tokens."""
    per_batch = max(1, max_batch_sequences // sampling.n)
    batches = -(-prompts // per_batch)
    return prompts * sampling.n * sampling.max_new_tokens, batches * sampling.max_new_tokens


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS (an instruct model's end of turn)
    and the model's generation config's (a checkpoint may list several)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return sorted(i for i in ids if isinstance(i, int))


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the first stop sequence (generation may run a token past it)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


class EndpointBackend:
    """An OpenAI-compatible completions endpoint; one request per prompt, `n` samples each."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url, self.model, self.name = base_url.rstrip("/"), model, f"{model}@{base_url}"
        self.api_key, self.concurrency, self.timeout_s = api_key, concurrency, timeout_s

    def generate(
        self, prompts: list[str], sampling: Sampling, progress: Progress | None = None
    ) -> list[list[str]]:
        from tunegate.endpoint import post_json

        def one(i: int) -> list[str]:
            payload = {
                "model": self.model,
                "prompt": prompts[i],
                "n": sampling.n,
                "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "seed": sampling.seed * 1_000_003 + i,
                **({"stop": list(sampling.stop)} if sampling.stop else {}),
            }
            answer = post_json(
                f"{self.base_url}/completions",
                payload,
                api_key=self.api_key,
                timeout_s=self.timeout_s,
            )
            choices = sorted(answer.get("choices", []), key=lambda c: c.get("index", 0))
            texts = [str(c.get("text", "")) for c in choices]
            if len(texts) != sampling.n:
                raise UserError(
                    f"{self.base_url}: asked for {sampling.n} completions, got {len(texts)}"
                )
            if progress is not None:
                progress(sampling.n)
            return texts

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, range(len(prompts))))


def load_for_inference(base_dir: Path, adapter_dir: Path, quant: QuantizationConfig) -> Any:
    """The base model with the adapter saved in `adapter_dir` (or the whole model saved there by
    full fine-tuning), for inference; left padding."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from tunegate.train.qlora import load_base

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    tokenizer.padding_side = "left"  # decoder-only batches pad on the left
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quant.method == "full" or not (adapter_dir / "adapter_config.json").is_file():
        model = load_base(adapter_dir, quant)  # a whole model saved there
    else:
        model = PeftModel.from_pretrained(load_base(base_dir, quant), adapter_dir)
    model.eval()
    return model, tokenizer


ENDPOINT_PREFIX = "openai:"


def load_backend(
    spec: str,
    *,
    quant: QuantizationConfig,
    base_model: str | None = None,
    endpoint: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    max_batch_sequences: int = 64,
    where: str = "--model",
) -> Backend:
    """A model named on the command line: `openai:NAME` (served at `endpoint`), an adapter
    directory (its base from `base_model`, else from the adapter's own config), or a directory
    holding a whole model."""
    if spec.startswith(ENDPOINT_PREFIX):
        if not endpoint:
            raise UserError(f"{where}: '{spec}' needs --endpoint (an OpenAI-compatible base URL)")
        return EndpointBackend(
            endpoint, spec.removeprefix(ENDPOINT_PREFIX), api_key=os.environ.get(api_key_env)
        )

    path = Path(spec)
    if embedded(spec) is not None or (path / "config.json").is_file():
        directory = resolve_model(spec)
        model, tokenizer = load_for_inference(directory, directory, quant)
        return TransformersBackend(
            model, tokenizer, name=spec, max_batch_sequences=max_batch_sequences
        )
    if not (path / "adapter_config.json").is_file():
        raise UserError(
            f"{where}: '{spec}' is not a model directory (config.json), an adapter directory "
            f"(adapter_config.json), an embedded model ({', '.join(EMBEDDED)}) or openai:NAME"
        )
    base = base_model or _adapter_base(path)
    if base is None:
        raise UserError(
            f"{where}: the adapter at '{spec}' does not name its base; pass --base-model"
        )
    model, tokenizer = load_for_inference(
        resolve_model(base), path, _adapter_quantization(path, quant)
    )
    return TransformersBackend(model, tokenizer, name=spec, max_batch_sequences=max_batch_sequences)


def _adapter_base(adapter: Path) -> str | None:
    """The base model an adapter was trained on: tunegate's record, else peft's config."""
    for name, key in (
        ("tunegate.json", "base_model"),
        ("adapter_config.json", "base_model_name_or_path"),
    ):
        file = adapter / name
        if file.is_file() and (value := json.loads(file.read_text()).get(key)):
            return str(value)
    return None


def _adapter_quantization(adapter: Path, default: QuantizationConfig) -> QuantizationConfig:
    """Inference loads the base as the adapter was trained (tunegate's record), else `default`."""
    file = adapter / "tunegate.json"
    if file.is_file() and (recorded := json.loads(file.read_text()).get("quantization")):
        return QuantizationConfig.model_validate(recorded)
    return default


def generate(
    model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy, one completion per prompt (the ladder's smoke check and single-answer metrics)."""
    backend = TransformersBackend(model, tokenizer, name="model", max_batch_sequences=batch_size)
    return [out[0] for out in backend.generate(prompts, Sampling(max_new_tokens=max_new_tokens))]
