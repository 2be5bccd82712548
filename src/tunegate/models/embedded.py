"""The models tunegate ships, by name, apart from how each is made (a registry with metadata, as
lm-evaluation-harness keeps its tasks): `tiny-llama`, built locally, the fast test vehicle, and
`smollm2-135m`, a real pretrained instruct model converted from a registry package. Any other
`model.name` is a local model directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tunegate.models.smollm2 as smollm2
import tunegate.models.tiny as tiny
from tunegate.errors import UserError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    architecture: dict[str, Any]  # its shape, known before it is built (memory, disk)
    bytes_on_disk: int  # what building it writes into the cache
    build_key: Callable[[], str]  # changes whenever the built bytes would
    directory: Callable[[Path], Path]  # where it lands in a cache, built or not
    ensure: Callable[[Path], Path]  # builds it once into the cache; returns its directory
    missing: Callable[[], str | None]  # why it cannot be built here (and how to fix), or None


EMBEDDED: dict[str, EmbeddedModel] = {
    tiny.TINY_LLAMA: EmbeddedModel(
        name=tiny.TINY_LLAMA,
        description="a 2-layer random-init Llama built locally in seconds: the fast test vehicle",
        architecture={**tiny.ARCHITECTURE, "vocab_size": tiny.VOCAB_SIZE},
        bytes_on_disk=4 * 2**20,
        build_key=tiny.build_key,
        directory=lambda cache: cache / "models" / f"tiny-llama-{tiny.build_key()}",
        ensure=lambda cache: tiny.ensure_tiny_llama(),
        missing=lambda: None,
    ),
    smollm2.SMOLLM2: EmbeddedModel(
        name=smollm2.SMOLLM2,
        description="SmolLM2-135M-Instruct (Apache-2.0), a pretrained instruct model with a chat "
        f"template, from the {smollm2.PACKAGE} package's GGUF, converted once to bf16",
        architecture=smollm2.ARCHITECTURE,
        bytes_on_disk=smollm2.CONVERTED_BYTES,
        build_key=smollm2.build_key,
        directory=smollm2.target_dir,
        ensure=smollm2.ensure_smollm2,
        missing=smollm2.missing_reason,
    ),
}


def embedded(name: str) -> EmbeddedModel | None:
    return EMBEDDED.get(name)


def is_built(model: EmbeddedModel) -> bool:
    return (model.directory(tiny.cache_dir()) / "config.json").is_file()


def model_fingerprint(name: str) -> str:
    """Identifies the model's bytes cheaply, so a rebuilt or replaced model re-runs stages."""
    if (known := embedded(name)) is not None:
        return f"{known.name}-{known.build_key()}"
    path = Path(name)
    h = hashlib.sha256()
    for f in sorted(path.glob("*")) if path.is_dir() else []:
        if f.is_file():
            stat = f.stat()
            h.update(f"{f.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
            if f.name == "config.json":
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def resolve_model(name: str) -> Path:
    """The plan's model name → a local directory (an embedded model is built on first use)."""
    if (known := embedded(name)) is not None:
        return known.ensure(tiny.cache_dir())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise UserError(
            f"model.name: '{name}' is neither an embedded model ({', '.join(EMBEDDED)}) nor a "
            "local model directory with a config.json (tunegate never downloads weights at run "
            "time)"
        )
    return path
