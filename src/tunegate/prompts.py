"""How an item's prompt reaches the model: as written (`raw`), or through the model's own chat
template as one user turn (`chat`), with the assistant turn opened for the answer.

One renderer for training and generation, for both arms: the experiment's only difference is the
data. Training on chat-rendered prompts keeps completion-only loss on the assistant turn: TRL
masks the (rendered) prompt and appends the tokenizer's EOS, which for a chat model is its
end-of-turn token (`<|im_end|>` for SmolLM2), so the model learns to close its turn and
generation stops there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunegate.data.items import Item
from tunegate.errors import UserError

Style = Literal["raw", "chat"]


@dataclass(frozen=True)
class PromptFormat:
    style: Style = "raw"
    system_prompt: str | None = None  # None: the chat template's own default, if it has one

    @classmethod
    def of(cls, model: Any) -> PromptFormat:
        """A plan's `model:` block (ModelConfig)."""
        return cls(style=model.prompt_format, system_prompt=model.system_prompt)

    def render(self, tokenizer: Any, prompt: str) -> str:
        if self.style == "raw":
            return prompt
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return str(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    def render_items(self, tokenizer: Any, items: list[Item]) -> list[Item]:
        """The items with their prompts rendered; everything else (completion, tests, ids) as
        is."""
        if self.style == "raw":
            return items
        return [i.model_copy(update={"prompt": self.render(tokenizer, i.prompt)}) for i in items]


def chat_tokenizer(model_dir: Path, fmt: PromptFormat) -> Any:
    """The model's tokenizer when `fmt` needs its chat template, else None; refuses a model
    without one in one line."""
    if fmt.style == "raw":
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"model.prompt_format: chat, but the tokenizer in {model_dir} has no chat template "
            "(use prompt_format: raw for a base model)"
        )
    return tokenizer


def render_items(model_dir: Path, fmt: PromptFormat, items: list[Item]) -> list[Item]:
    return fmt.render_items(chat_tokenizer(model_dir, fmt), items)
