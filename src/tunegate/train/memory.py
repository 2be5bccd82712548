"""How much GPU memory a fine-tuning run needs, from a model's `config.json` alone.

Component by component, for tunegate's trainer (transformers + peft + trl + bitsandbytes):

- weights: 4-bit nf4/fp4 for every linear layer inside the decoder blocks (0.5 byte/param plus the
  block constants: one fp32 absmax per 64 weights, or with double quantization one 8-bit absmax
  per 64 and one fp32 per 256 blocks); the embeddings, the LM head and the norms stay in the
  compute dtype, or fp32 where peft's `prepare_model_for_kbit_training` upcasts them;
- LoRA parameters, their gradients and AdamW's two moments, all fp32 (peft creates them so);
- activations kept for the backward pass, per token and layer, counted tensor by tensor (below);
  with gradient checkpointing only each layer's input plus one layer recomputed;
- the loss over the vocabulary: transformers upcasts the logits to fp32 before the cross-entropy,
  which for a 128k vocabulary is often the single largest activation;
- the CUDA context and the caching allocator's slack.

Shapes come from `config.json`, so a model never has to be downloaded (configs of popular models
ship in `tunegate/resources/models`). `docs/benchmarks.md` compares the estimate with published
figures and with a measured run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from tunegate.errors import UserError
from tunegate.models import embedded

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# bitsandbytes quantizes in blocks of 64 weights; double quantization stores those absmax
# constants as 8-bit with one fp32 constant per 256 blocks (QLoRA paper, section 3).
NF4_BYTES = 0.5 + 4 / 64
NF4_DOUBLE_QUANT_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# Measured: torch 2.x on Hopper/Ada creates ~0.5 GiB of context (cuBLAS/cuDNN workspaces
# included) before the first tensor; nvidia-smi counts it, torch's allocator statistics do not.
CUDA_CONTEXT_GIB = 0.5
# The caching allocator reserves more than it hands out (rounding, fragmentation); 10 % of the
# allocated peak covers what was measured on the runs in docs/benchmarks.md.
ALLOCATOR_SLACK = 0.10
# RTX 4070 Ti, the original plan's GPU tower.
DEFAULT_VRAM_GIB = 12.0

Method = Literal["qlora", "lora", "full"]


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str, where: str = "") -> ModelShape:
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            return cls(
                name=name,
                hidden=hidden,
                intermediate=int(config["intermediate_size"]),
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab=int(config["vocab_size"]),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                # Qwen2 has biases on q/k/v; Llama and Mistral have none.
                qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            )
        except KeyError as err:
            raise UserError(f"{where or name}: no {err.args[0]!r} in the model config") from None

    def linear_layers(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of the linear layers in one decoder block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [
            ("q_proj", h, q),
            ("k_proj", h, kv),
            ("v_proj", h, kv),
            ("o_proj", q, h),
            ("gate_proj", h, i),
            ("up_proj", h, i),
            ("down_proj", i, h),
        ]

    @property
    def linear_params(self) -> int:
        """Weights of every linear layer in the decoder blocks (what 4-bit quantizes)."""
        return self.layers * sum(a * b for _, a, b in self.linear_layers())

    @property
    def other_params(self) -> int:
        """Embeddings, LM head, norms and biases: what stays in 16/32-bit."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = self.layers * 2 * self.hidden + self.hidden
        biases = self.layers * (q + 2 * kv) if self.qkv_bias else 0
        return embeddings + norms + biases

    @property
    def total_params(self) -> int:
        return self.linear_params + self.other_params


@dataclass(frozen=True)
class TrainingShape:
    method: Method = "qlora"
    batch_size: int = 1
    max_length: int = 2048
    lora_r: int = 16
    lora_targets: tuple[str, ...] = ("all-linear",)
    lora_dropout: float = 0.05
    gradient_checkpointing: bool = True
    compute_dtype: str = "bfloat16"
    double_quant: bool = True
    # peft's prepare_model_for_kbit_training casts every non-4-bit parameter to fp32.
    upcast_frozen: bool = False  # tunegate's default; True is peft's fp32 cast
    optimizer_bytes_per_param: int = 8  # AdamW: two fp32 moments

    @classmethod
    def from_settings(
        cls, training: Any, quant: Any, lora: Any, max_length: int, **overrides: Any
    ) -> TrainingShape:
        """From a plan's `training`, `quantization` and `lora` blocks."""
        targets = lora.target_modules
        values = {
            "method": quant.method,
            "batch_size": training.batch_size,
            "max_length": max_length,
            "lora_r": lora.r,
            "lora_targets": (targets,) if isinstance(targets, str) else tuple(targets),
            "lora_dropout": lora.dropout,
            "gradient_checkpointing": training.gradient_checkpointing,
            "double_quant": quant.double_quant,
            "upcast_frozen": quant.upcast_frozen,
        }
        return cls(**(values | overrides))


@dataclass
class MemoryEstimate:
    model: str
    training: TrainingShape
    components: dict[str, float] = field(default_factory=dict)  # bytes
    vram_gib: float = DEFAULT_VRAM_GIB

    @property
    def load(self) -> float:
        """Right after loading, before k-bit preparation: the original plan's "Loaded in 4-bit"
        figure."""
        return self.components["weights at load"]

    @property
    def allocated_peak(self) -> float:
        skip = ("cuda context", "weights at load")
        return sum(v for k, v in self.components.items() if k not in skip)

    @property
    def total(self) -> float:
        return self.allocated_peak * (1 + ALLOCATOR_SLACK) + self.components["cuda context"]

    @property
    def fits(self) -> bool:
        return self.total <= self.vram_gib * GIB

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "training": asdict(self.training),
            "components_gib": {k: v / GIB for k, v in self.components.items()},
            "load_gib": self.load / GIB,
            "allocated_peak_gib": self.allocated_peak / GIB,
            "total_gib": self.total / GIB,
            "vram_gib": self.vram_gib,
            "fits": self.fits,
        }


def _targets(shape: ModelShape, targets: tuple[str, ...]) -> list[tuple[str, int, int]]:
    layers = shape.linear_layers()
    if "all-linear" in targets:
        return layers
    unknown = set(targets) - {n for n, _, _ in layers}
    if unknown:
        raise UserError(f"lora target modules not in this model: {', '.join(sorted(unknown))}")
    return [layer for layer in layers if layer[0] in targets]


def activation_bytes_per_token_layer(shape: ModelShape, t: TrainingShape) -> float:
    """Tensors one decoder block keeps for its backward pass, per token, in bytes.

    Counted from the HF Llama/Mistral/Qwen2 block with SDPA attention: each RMSNorm keeps its
    fp32 input and its normalized output; attention keeps rotated q and k, v and its output;
    the SwiGLU MLP keeps gate, up, SiLU(gate) and their product. A LoRA dropout (p > 0) adds a
    dropped copy of the input and its mask for every adapted layer.
    """
    c = DTYPE_BYTES[t.compute_dtype]
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    norms = 2 * (4 * h + c * h)
    attention = c * (2 * q + 2 * kv)
    mlp = c * 4 * i
    total = norms + attention + mlp
    if t.method != "full":
        adapted = _targets(shape, t.lora_targets)
        total += sum(c * t.lora_r for _ in adapted)
        if t.lora_dropout > 0:
            total += sum(c * fan_in for _, fan_in, _ in adapted)
    return float(total)


# trl ≥ 1.x scores the vocabulary through a fused LM head in tiles of 4096 tokens × 32768
# vocabulary entries (trl.kernels.chunked_logprob) instead of materializing [tokens, vocab] logits.
LOSS_TILE_TOKENS = 4096
LOSS_TILE_VOCAB = 32768


def loss_bytes(shape: ModelShape, t: TrainingShape, tokens: int) -> float:
    """The fused LM head's peak: one logits tile in the head's dtype, and the fp32 gradient of
    the last hidden states it accumulates in the backward."""
    head = 4 if (t.method == "qlora" and t.upcast_frozen) else DTYPE_BYTES[t.compute_dtype]
    tile = min(tokens, LOSS_TILE_TOKENS) * min(shape.vocab, LOSS_TILE_VOCAB) * head
    return float(tile + tokens * 4 * shape.hidden)


def estimate(
    shape: ModelShape, t: TrainingShape, vram_gib: float = DEFAULT_VRAM_GIB
) -> MemoryEstimate:
    c = DTYPE_BYTES[t.compute_dtype]
    tokens = t.batch_size * t.max_length
    parts: dict[str, float] = {}
    if t.method == "qlora":
        per_param = NF4_DOUBLE_QUANT_BYTES if t.double_quant else NF4_BYTES
        other = 4 if t.upcast_frozen else c
        parts["weights"] = shape.linear_params * per_param + shape.other_params * other
        load = shape.linear_params * per_param + shape.other_params * c
    else:
        parts["weights"] = load = shape.total_params * c
    if t.method == "full":
        trainable = shape.total_params
        parts["gradients"] = trainable * c
        parts["optimizer states"] = trainable * 2 * c  # torch AdamW keeps moments in param dtype
    else:
        lora = sum(t.lora_r * (a + b) for _, a, b in _targets(shape, t.lora_targets))
        trainable = lora * shape.layers
        parts["lora parameters"] = trainable * 4
        parts["gradients"] = trainable * 4
        parts["optimizer states"] = trainable * t.optimizer_bytes_per_param
    per_layer = activation_bytes_per_token_layer(shape, t)
    # peft's upcast makes the norms' weights fp32, so the residual stream leaves them in fp32.
    residual = 4 if (t.method == "qlora" and t.upcast_frozen) else c
    if t.gradient_checkpointing:
        # Each block's input is kept; the block being recomputed holds its full set once.
        kept = tokens * (shape.layers * residual * shape.hidden + per_layer)
    else:
        kept = tokens * shape.layers * per_layer
    parts["activations"] = kept
    parts["loss over the vocabulary"] = loss_bytes(shape, t, tokens)
    parts["cuda context"] = CUDA_CONTEXT_GIB * GIB
    parts["weights at load"] = load
    return MemoryEstimate(model=shape.name, training=t, components=parts, vram_gib=vram_gib)


def shipped_models() -> dict[str, Path]:
    """Configs that ship with tunegate, by hub id ("meta-llama/Meta-Llama-3-8B")."""
    root = files("tunegate") / "resources" / "models"
    return {
        p.name.removesuffix(".json").replace("--", "/"): Path(str(p))
        for p in root.iterdir()
        if p.name.endswith(".json")
    }


def load_shape(model: str) -> ModelShape:
    """A model's shape from a local directory, a config.json path, a shipped hub id, or
    'tiny-llama'."""
    if (known := embedded(model)) is not None:  # its shape is known without building it
        return ModelShape.from_config(known.architecture, model)
    path = Path(model)
    config_file = path / "config.json" if path.is_dir() else path
    shipped = shipped_models()
    lowered = {k.lower(): v for k, v in shipped.items()}
    if not config_file.is_file():
        match = lowered.get(model.lower()) or next(
            (v for k, v in lowered.items() if k.split("/")[-1] == model.lower()), None
        )
        if match is None:
            raise UserError(
                f"{model}: not a local model directory or config.json, and not a shipped "
                f"config (shipped: {', '.join(sorted(shipped))})"
            )
        config_file = match
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{config_file}:{err.lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: expected a JSON object")
    config = config.get("text_config", config)  # multimodal wrappers nest the language model
    return ModelShape.from_config(config, model, str(config_file))


def for_plan(plan: Any, vram_gib: float = DEFAULT_VRAM_GIB) -> MemoryEstimate:
    """The estimate for a plan's most demanding stage (largest batch; the plan's max_length)."""
    trainings = [plan.stage_training(s) for s in plan.stages if s.kind == "train"]
    trainings = trainings or [plan.training]
    largest = max(trainings, key=lambda t: t.batch_size)
    shape = TrainingShape.from_settings(
        largest, plan.quantization, plan.lora, plan.model.max_length
    )
    return estimate(load_shape(plan.model.name), shape, vram_gib=vram_gib)


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 100 or n == 0 else f"{n / 2**20:.1f} MiB"


def advice(est: MemoryEstimate) -> list[str]:
    """Concrete changes that bring an estimate that does not fit under its VRAM, largest first."""
    t = est.training
    tips: list[str] = []
    if not t.gradient_checkpointing:
        tips.append("turn gradient_checkpointing on")
    if t.batch_size > 1:
        tips.append(
            f"batch_size {max(1, t.batch_size // 2)} with gradient_accumulation_steps doubled "
            "(same effective batch)"
        )
    if t.max_length > 512:
        tips.append(f"max_length {t.max_length // 2} (check how many samples would be cut)")
    if t.method == "qlora" and t.upcast_frozen:
        tips.append("keep frozen embeddings and head in bf16 (quantization.upcast_frozen: false)")
    if t.method != "qlora":
        tips.append("method qlora (4-bit base)")
    return tips or ["a GPU with more memory"]
