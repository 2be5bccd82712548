"""`tiny-llama`: the embedded default model, built locally and loaded like a hub model.

A 2-layer Llama and a byte-level BPE tokenizer trained on a fixed corpus, both deterministic: the
same bytes on every machine, so a test or a demo never downloads anything. It is saved with
`save_pretrained` and every caller loads it back with `AutoModelForCausalLM.from_pretrained`,
exactly the path a real checkpoint takes.

The tokenizer's corpus is the example data's texts, frozen in `resources/tiny-llama-corpus.json`
(`python -m tools.tiny_corpus` regenerates it, the tests check it is current), so that this
module imports nothing of tunegate's but `errors`: the plan fingerprints the model, and the data
reads the plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

TINY_LLAMA = "tiny-llama"  # the embedded model's name in `model.name`
BUILD_VERSION = 1  # bump when the architecture or the corpus changes: forces a rebuild
VOCAB_SIZE = 512
HEAD_INIT_SCALE = 3.0
ARCHITECTURE: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,  # multiples of 64: the bitsandbytes 4-bit block size
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    tie_word_embeddings=False,  # a separate head, like Llama-3-8B (the head stays unquantized)
)


def cache_dir() -> Path:
    root = os.environ.get("TUNEGATE_CACHE") or Path.home() / ".cache" / "tunegate"
    return Path(root)


# Beside the example data: common Python/JS/SQL fragments and instruction phrasing.
FRAGMENTS: tuple[str, ...] = (
    "def function(x):\n    return x\nimport os\nclass Example:\n    pass\n",
    "const handler = (req, res) => { res.json({ ok: true }); };\nfunction f() {}\n",
    "SELECT name, COUNT(*) FROM users WHERE id = 1 GROUP BY name ORDER BY name;\n",
    "Write a function that returns the result.\nFix the bug in this function:\n",
)


def _corpus() -> list[str]:
    """A fixed corpus of code and prose so common Python/JS/SQL fragments get their own tokens:
    the example experiment's items and the micro samples (frozen), then FRAGMENTS."""
    seed = files("tunegate").joinpath("resources", "tiny-llama-corpus.json")
    return [*json.loads(seed.read_text(encoding="utf-8")), *FRAGMENTS]


def _build(target: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-off build must not paint bars over a CLI's output

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no <unk>
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **ARCHITECTURE,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # A pretrained head is far from its N(0, 0.02) init. At init scale, a frozen random head
        # cannot express a confident prediction through 128 dims, and LoRA (which leaves the head
        # frozen, as QLoRA does) plateaus; 3x lets the tiny model learn in seconds.
        model.lm_head.weight.mul_(HEAD_INIT_SCALE)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def build_key() -> str:
    """Everything the built bytes depend on: a changed corpus or init must not reuse a cache."""
    body = json.dumps(
        {
            "v": BUILD_VERSION,
            "arch": ARCHITECTURE,
            "vocab": VOCAB_SIZE,
            "head_scale": HEAD_INIT_SCALE,
            "corpus": hashlib.sha256("\x00".join(_corpus()).encode()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def ensure_tiny_llama() -> Path:
    """Return the directory of the built model, building it once (atomically) if missing."""
    target = cache_dir() / "models" / f"tiny-llama-{build_key()}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=target.parent))
    try:
        _build(tmp)
        try:
            tmp.rename(target)  # atomic: a concurrent builder either wins or finds it built
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
