"""What every scenario's generator builds: a task, and what the JavaScript scenarios share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JS_CONSTRAINTS = "CommonJS (module.exports), plain JavaScript, no packages"


@dataclass(frozen=True)
class Task:
    key: str
    scenario: str
    language: str
    prompt: str  # the plain task: the control arm's prompt
    completion: str
    tests: str
    metadata: dict[str, str] = field(default_factory=dict)  # what the experiment arm adds
    group: str | None = None  # the source problem, shared across scenarios


def js(value: Any) -> str:
    """A value as a JavaScript literal (JSON, non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False)
