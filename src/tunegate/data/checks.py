"""Data checks: pairing, train/test leakage, token lengths, EOS and the label-mask preview.

Pure functions over items (and a tokenizer where tokens matter). Each returns a `CheckResult`: a
verdict (ok / warn / fail), a one-line summary, one message per finding naming the item ids, and
the numbers behind it; a `CheckReport` collects them. `TokenWorker` runs the tokenizer-side
checks in worker processes, so that the commands use a second core while imports take seconds.

Token counts are TRL's, not an approximation: `SFTTrainer` (trl 1.x) appends the EOS *text* to a
prompt-completion example's completion unless it already ends with it, tokenizes the prompt and
prompt + completion separately with the tokenizer's defaults (special tokens included), masks
the common prefix of the two (completion-only loss), keeps the first `max_length` tokens
(`truncation_mode="keep_start"`) and drops an example whose labels are then all masked.
`encode_like_trl` reproduces that with batched tokenizer calls (10,000 items in well under a
second); `eos_check` runs TRL's own preparation on sample items and fails if the two disagree, and
`label_mask_preview` shows TRL's prepared example itself.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tunegate.errors import UserError

if TYPE_CHECKING:
    # Annotations only: importing pydantic's models here would slow `tunegate --help`.
    from transformers import PreTrainedTokenizerBase

    from tunegate.data.items import Item

Verdict = Literal["ok", "warn", "fail"]
_RANK: dict[str, int] = {"ok": 0, "warn": 1, "fail": 2}

# Near-duplicates: Jaccard similarity of the sets of token 3-grams ("shingles") of the normalized
# prompt + completion. 3-grams of code tokens keep order locally, so two functions that share
# their words but not their structure stay apart; 0.8 flags items that differ by a name or an
# operator in a short sample, not two different samples on the same template.
LEAKAGE_NGRAM = 3
LEAKAGE_THRESHOLD = 0.8


@dataclass
class CheckResult:
    """One check's outcome. `messages` name the items; `data` holds the numbers (for --json)."""

    name: str
    verdict: Verdict
    summary: str
    messages: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    scope: str = ""  # what was checked: a file, or "<stage> / <arm>"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    """Every check of one `tunegate data check` (or `check-file`); the worst verdict wins."""

    checks: list[CheckResult] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return max((c.verdict for c in self.checks), key=_RANK.__getitem__, default="ok")

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    def add(self, result: CheckResult, scope: str | None = None) -> CheckResult:
        if scope is not None:
            result.scope = scope
        self.checks.append(result)
        return result

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": [c.to_json() for c in self.checks]}


def _worst(*verdicts: Verdict) -> Verdict:
    return max(verdicts, key=_RANK.__getitem__, default="ok")


def _ids(ids: Iterable[str], limit: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(f"'{i}'" for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# --- pairing --------------------------------------------------------------------------------

ARM_FIELDS = ("scenario", "prompt", "completion", "language", "tests", "metadata")


def pairing(
    control: Sequence[Item],
    experiment: Sequence[Item],
    may_differ: Iterable[str] = ("prompt", "metadata"),
) -> CheckResult:
    """Same ids in both arms, and only the fields in `may_differ` differ: every problem listed.

    `load_experiment` stops at the first problem; this names them all, with the fields that
    differ per item. An item whose prompt is the same in both arms trains both arms alike, which
    is legal but dilutes the comparison, so it is a warning.
    """
    allowed = set(may_differ)
    c_by_id = {i.id: i for i in control}
    e_by_id = {i.id: i for i in experiment}
    messages: list[str] = []
    only_c = [i for i in c_by_id if i not in e_by_id]
    only_e = [i for i in e_by_id if i not in c_by_id]
    if only_c:
        messages.append(f"{len(only_c)} id(s) only in control: {_ids(only_c)}")
    if only_e:
        messages.append(f"{len(only_e)} id(s) only in experiment: {_ids(only_e)}")
    differing: dict[str, list[str]] = {}
    same_prompt: list[str] = []
    for item_id, c in c_by_id.items():
        e = e_by_id.get(item_id)
        if e is None:
            continue
        fields = [f for f in ARM_FIELDS if f not in allowed and getattr(c, f) != getattr(e, f)]
        if fields:
            differing[item_id] = fields
            messages.append(f"item '{item_id}': {', '.join(fields)} differ between arms")
        if c.prompt == e.prompt and "prompt" in allowed:
            same_prompt.append(item_id)
    paired = len(c_by_id) - len(only_c)
    verdict: Verdict = "fail" if (only_c or only_e or differing) else "ok"
    if same_prompt:
        verdict = _worst(verdict, "warn")
        messages.append(
            f"{len(same_prompt)} item(s) have the same prompt in both arms: {_ids(same_prompt)}"
        )
    if verdict == "fail":
        summary = (
            f"{len(only_c) + len(only_e)} unpaired id(s), {len(differing)} item(s) differing in "
            f"fields other than {', '.join(sorted(allowed))}"
        )
    else:
        summary = f"{paired} items paired by id; arms differ only in {', '.join(sorted(allowed))}"
    return CheckResult(
        "pairing",
        verdict,
        summary,
        messages,
        {
            "only_control": only_c,
            "only_experiment": only_e,
            "differing": differing,
            "same_prompt": same_prompt,
        },
    )


# --- leakage --------------------------------------------------------------------------------

# Comment syntax per language. Comments are stripped before comparing, so a test item that is a
# training item with a different comment still counts as the same item. A '#' or '//' inside a
# string literal is stripped too: a cheap approximation that errs towards reporting.
_HASH = re.compile(r"#[^\n]*")
_C_LIKE = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_SQL = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_COMMENTS: dict[str, re.Pattern[str]] = {
    **dict.fromkeys(("python", "py", "bash", "sh", "shell", "ruby", "r", "yaml", "perl"), _HASH),
    **dict.fromkeys(
        (
            "javascript",
            "js",
            "jsx",
            "typescript",
            "ts",
            "tsx",
            "java",
            "c",
            "cpp",
            "c++",
            "csharp",
            "c#",
            "go",
            "rust",
            "kotlin",
            "swift",
            "php",
            "scala",
        ),
        _C_LIKE,
    ),
    "sql": _SQL,
}
_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize(text: str, language: str = "") -> str:
    """Comments (by the item's language) removed, lower-cased, and split into words and single
    punctuation marks joined by one space: `x-y` and `x - y` normalize alike, as indentation
    and line breaks do."""
    pattern = _COMMENTS.get(language.lower())
    if pattern is not None:
        text = pattern.sub(" ", text)
    return " ".join(_TOKEN.findall(text.lower()))


def shingles(text: str, n: int = LEAKAGE_NGRAM) -> frozenset[str]:
    """The set of token n-grams of normalized text."""
    tokens = text.split()
    if len(tokens) < n:
        return frozenset([" ".join(tokens)]) if tokens else frozenset()
    return frozenset(" ".join(tokens[k : k + n]) for k in range(len(tokens) - n + 1))


def _item_text(item: Item) -> str:
    # Prompt and completion together: that is the text a model trains on, and a test item whose
    # prompt and completion were split differently from a training item's is the same sample.
    return normalize(item.prompt + "\n" + item.completion, item.language)


@dataclass(frozen=True)
class Leak:
    """A test item and the training item most similar to it (1.0 and exact: the same text)."""

    test_id: str
    train_id: str
    similarity: float
    exact: bool


def _prefix_len(size: int, threshold: float) -> int:
    # All-pairs prefix filter: two sets with Jaccard >= t share a token within the first
    # |x| - ceil(t|x|) + 1 tokens of each, in one global order. The epsilon rounds towards a
    # longer prefix, so float error can only add candidates, never lose a pair.
    return size - math.ceil(threshold * size - 1e-9) + 1


def similar_pairs(
    left: Sequence[frozenset[str]],
    right: Sequence[frozenset[str]] | None,
    threshold: float,
) -> list[tuple[int, int, float]]:
    """For each set in `right`, the most similar set in `left` with Jaccard >= threshold.

    Returns (right index, left index, Jaccard), ties to the lower left index. With `right=None`,
    a self-join of `left`: each set against the sets before it.

    Exact, not approximate (PPJoin, Xiao et al. 2008): tokens are ranked rarest first; an
    inverted index holds each set's prefix (`_prefix_len`) with positions; a candidate must fit
    by size (Jaccard >= t needs t|x| <= |y| <= |x|/t) and, at every shared prefix token, still be
    able to reach the overlap t/(1+t)(|x|+|y|) with the tokens left after it (the positional
    filter, which prunes ~95 % of the candidates on templated code). Survivors are verified by a
    real intersection. A test compares this with comparing every pair.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    self_join = right is None
    probes = left if right is None else right
    rank = _rarest_first(left, right)

    def prefix(s: frozenset[str]) -> list[int]:
        return sorted(map(rank.__getitem__, s))[: _prefix_len(len(s), threshold)]

    sizes = [len(s) for s in left]
    ratio = threshold / (1 + threshold)
    index: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)  # token -> (set, position)
    if not self_join:
        for i, s in enumerate(left):
            for position, tok in enumerate(prefix(s)):
                index[tok].append((i, position))
    found: list[tuple[int, int, float]] = []
    for j, s in enumerate(probes):
        if not s:
            continue
        size = len(s)
        low, high = threshold * size - 1e-9, size / threshold + 1e-9
        probe = prefix(s)
        overlap: dict[int, int] = {}  # candidate -> prefix tokens shared so far; -1: pruned
        for px, tok in enumerate(probe):
            left_in_x = size - px - 1
            for i, py in index.get(tok, ()):
                seen = overlap.get(i, 0)
                if seen < 0:
                    continue
                n = sizes[i]
                if seen == 0 and not low <= n <= high:
                    overlap[i] = -1
                    continue
                needed = math.ceil(ratio * (size + n) - 1e-9)
                reachable = seen + 1 + min(left_in_x, n - py - 1)
                overlap[i] = seen + 1 if reachable >= needed else -1
        best_i, best = _best_candidate(s, overlap, left, sizes, threshold)
        if best_i >= 0:
            found.append((j, best_i, best))
        if self_join:
            for position, tok in enumerate(probe):
                index[tok].append((j, position))
    return found


def _rarest_first(
    left: Sequence[frozenset[str]], right: Sequence[frozenset[str]] | None
) -> dict[str, int]:
    """Each token's rank, rarest first, over both sides (`left` alone for a self-join)."""
    frequency: Counter[str] = Counter()
    for s in left:
        frequency.update(s)
    if right is not None:
        for s in right:
            frequency.update(s)
    # The stable sort breaks ties by first appearance: deterministic.
    return {tok: r for r, (tok, _) in enumerate(sorted(frequency.items(), key=itemgetter(1)))}


def _best_candidate(
    s: frozenset[str],
    overlap: dict[int, int],
    left: Sequence[frozenset[str]],
    sizes: list[int],
    threshold: float,
) -> tuple[int, float]:
    """(left index, Jaccard) of the surviving candidate most similar to `s`, ties to the lower
    index; (-1, threshold) when none reaches the threshold."""
    size = len(s)
    best_i, best = -1, threshold
    for i, seen in overlap.items():
        if seen <= 0:
            continue
        common = len(s & left[i])
        score = common / (size + sizes[i] - common)
        if score > best or (score == best and (best_i < 0 or i < best_i)):
            best_i, best = i, score
    return best_i, best


ShingleCache = dict[tuple[str, str, str, int], tuple[str, frozenset[str]]]


def _text_and_shingles(
    item: Item, ngram: int, cache: ShingleCache | None
) -> tuple[str, frozenset[str]]:
    key = (item.language, item.prompt, item.completion, ngram)
    if cache is not None and key in cache:
        return cache[key]
    text = _item_text(item)
    value = (text, shingles(text, ngram))
    if cache is not None:
        cache[key] = value
    return value


def find_leaks(
    train: Sequence[Item],
    test: Sequence[Item],
    threshold: float = LEAKAGE_THRESHOLD,
    *,
    ngram: int = LEAKAGE_NGRAM,
    cache: ShingleCache | None = None,
) -> list[Leak]:
    """Every test item that is an exact (normalized) or near duplicate of a training item.

    `cache` (any dict, owned by the caller) keeps each item's normalized text and shingles
    across calls: the stages of a ladder select overlapping items.
    """
    train_done = [_text_and_shingles(i, ngram, cache) for i in train]
    first_by_text: dict[str, str] = {}
    for item, (text, _) in zip(train, train_done, strict=True):
        first_by_text.setdefault(text, item.id)
    leaks: list[Leak] = []
    rest: list[Item] = []
    rest_sets: list[frozenset[str]] = []
    for item in test:
        text, item_shingles = _text_and_shingles(item, ngram, cache)
        if text in first_by_text:
            leaks.append(Leak(item.id, first_by_text[text], 1.0, exact=True))
        else:
            rest.append(item)
            rest_sets.append(item_shingles)
    pairs = similar_pairs([sh for _, sh in train_done], rest_sets, threshold)
    leaks += [Leak(rest[j].id, train[i].id, score, exact=False) for j, i, score in pairs]
    return leaks


def leakage(
    train: Sequence[Item],
    test: Sequence[Item],
    threshold: float = LEAKAGE_THRESHOLD,
    *,
    ngram: int = LEAKAGE_NGRAM,
    cache: ShingleCache | None = None,
) -> CheckResult:
    """Train/test leakage: an exact duplicate fails (the test item was trained on); a near
    duplicate warns (templated data has them legitimately, but they inflate test scores)."""
    leaks = find_leaks(train, test, threshold, ngram=ngram, cache=cache)
    exact = [leak for leak in leaks if leak.exact]
    near = sorted((leak for leak in leaks if not leak.exact), key=lambda x: -x.similarity)
    messages = [
        f"test item '{x.test_id}' is training item '{x.train_id}' (same text after normalization)"
        for x in exact
    ] + [
        f"test item '{x.test_id}' ~ training item '{x.train_id}' (Jaccard {x.similarity:.2f})"
        for x in near
    ]
    verdict: Verdict = "fail" if exact else "warn" if near else "ok"
    summary = (
        f"{len(test)} test vs {len(train)} train items: {len(exact)} exact, {len(near)} near "
        f"duplicate(s) (Jaccard >= {threshold:g} of token {ngram}-grams)"
    )
    return CheckResult(
        "leakage",
        verdict,
        summary,
        messages,
        {
            "threshold": threshold,
            "ngram": ngram,
            "exact": [asdict(x) for x in exact],
            "near": [asdict(x) for x in near],
        },
    )


def duplicates(
    items: Sequence[Item], threshold: float = LEAKAGE_THRESHOLD, *, ngram: int = LEAKAGE_NGRAM
) -> CheckResult:
    """Duplicates within one file: any split of it would put one copy in train, one in test."""
    texts = [_item_text(i) for i in items]
    first: dict[str, str] = {}
    exact: list[tuple[str, str]] = []
    unique_items: list[Item] = []
    unique_texts: list[str] = []
    for item, text in zip(items, texts, strict=True):
        if text in first:
            exact.append((item.id, first[text]))
        else:
            first[text] = item.id
            unique_items.append(item)
            unique_texts.append(text)
    pairs = similar_pairs([shingles(t, ngram) for t in unique_texts], None, threshold)
    near = [(unique_items[j].id, unique_items[i].id, score) for j, i, score in pairs]
    messages = [
        f"item '{a}' duplicates item '{b}' (same text after normalization)" for a, b in exact
    ]
    messages += [
        f"item '{a}' ~ item '{b}' (Jaccard {s:.2f})"
        for a, b, s in sorted(near, key=lambda x: -x[2])
    ]
    verdict: Verdict = "warn" if exact or near else "ok"
    return CheckResult(
        "duplicates",
        verdict,
        f"{len(items)} items: {len(exact)} exact, {len(near)} near duplicate(s) "
        f"(Jaccard >= {threshold:g} of token {ngram}-grams)",
        messages,
        {
            "threshold": threshold,
            "ngram": ngram,
            "exact": [{"id": a, "duplicate_of": b} for a, b in exact],
            "near": [{"id": a, "similar_to": b, "similarity": s} for a, b, s in near],
        },
    )


# --- tokens: lengths, EOS, label mask ---------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """An item as TRL's SFTTrainer tokenizes it, before truncation."""

    id: str
    tokens: int  # input_ids: prompt + completion + EOS
    prompt_tokens: int  # masked: the common prefix of the tokenized prompt and prompt+completion
    prompt_is_prefix: bool  # False: the prompt's last tokens merge with the completion's first


def _with_eos(completion: str, eos: str | None) -> str:
    # TRL's `add_eos`: the EOS text is appended unless the completion already ends with it.
    if eos and not completion.endswith(eos):
        return completion + eos
    return completion


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_like_trl(items: Sequence[Item], tokenizer: PreTrainedTokenizerBase) -> list[Encoded]:
    """Token counts of each item exactly as TRL's prompt-completion preparation builds them."""
    if not items:
        return []
    eos = tokenizer.eos_token
    # Batches: the tokenizers library encodes them on all cores unless TOKENIZERS_PARALLELISM
    # says otherwise (TokenWorker's process allows it).
    texts = [i.prompt + _with_eos(i.completion, eos) for i in items]
    full = tokenizer(texts, return_attention_mask=False)["input_ids"]
    prompts = tokenizer([i.prompt for i in items], return_attention_mask=False)["input_ids"]
    out = []
    for item, p, f in zip(items, prompts, full, strict=True):
        common = _common_prefix(p, f)
        out.append(Encoded(item.id, len(f), common, common == len(p)))
    return out


def _nearest_rank(sorted_values: list[int], q: float) -> int:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def token_lengths(
    items: Sequence[Item],
    tokenizer: PreTrainedTokenizerBase | None,
    max_length: int,
    *,
    on_truncation: Literal["fail", "warn"] = "fail",
    encoded: Sequence[Encoded] | None = None,
) -> CheckResult:
    """Length statistics (min / median / p95 / max, nearest rank) and every item that TRL would
    truncate at `max_length`, named with its counts. Pass `encoded` to reuse a tokenization."""
    if encoded is None:
        if tokenizer is None:
            raise ValueError("token_lengths needs a tokenizer or precomputed `encoded`")
        encoded = encode_like_trl(items, tokenizer)
    lengths = sorted(e.tokens for e in encoded)
    if not lengths:
        return CheckResult("token_lengths", "ok", "no items", data={"max_length": max_length})
    stats: dict[str, Any] = {
        "items": len(lengths),
        "min": lengths[0],
        "median": _nearest_rank(lengths, 0.5),
        "p95": _nearest_rank(lengths, 0.95),
        "max": lengths[-1],
        "max_length": max_length,
    }
    too_long = [e for e in encoded if e.tokens > max_length]
    messages = []
    for e in too_long:
        if e.prompt_tokens >= max_length:
            # TRL keeps the first max_length tokens: all prompt, all masked, and then drops it.
            consequence = "the prompt alone fills max_length: TRL drops the sample"
        else:
            consequence = (
                f"TRL keeps the first {max_length}: "
                f"{e.tokens - max_length} completion token(s) and the EOS are cut"
            )
        messages.append(
            f"item '{e.id}': {e.tokens} tokens (prompt {e.prompt_tokens}, completion + EOS "
            f"{e.tokens - e.prompt_tokens}) > max_length {max_length}; {consequence}"
        )
    verdict: Verdict = on_truncation if too_long else "ok"
    summary = (
        f"{len(lengths)} items, tokens min {stats['min']} / median {stats['median']} / p95 "
        f"{stats['p95']} / max {stats['max']} (max_length {max_length}); "
        f"{len(too_long)} would be truncated"
    )
    stats["truncated"] = [asdict(e) for e in too_long]
    return CheckResult("token_lengths", verdict, summary, messages, stats)


def prompt_boundary(encoded: Sequence[Encoded]) -> CheckResult:
    """Items whose prompt's last tokens merge with the completion's first (e.g. a prompt ending
    in a space): TRL then starts the trained part where the tokenizations diverge, so a piece of
    the prompt is trained on and the model sees another context than at inference."""
    bad = [e.id for e in encoded if not e.prompt_is_prefix]
    if not bad:
        return CheckResult(
            "prompt_boundary", "ok", "every prompt ends on a token boundary", data={"items": []}
        )
    return CheckResult(
        "prompt_boundary",
        "warn",
        f"{len(bad)} item(s) whose prompt and completion merge into one token at the boundary",
        [f"item '{i}': the prompt's tokens are not a prefix of prompt + completion" for i in bad],
        {"items": bad},
    )


def _trl_prepare(
    items: Sequence[Item], tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> list[dict[str, list[int]]]:
    """TRL's own SFT dataset preparation (EOS, tokenization, completion mask → labels,
    truncation, dropping fully masked examples) of `items`, as `train/qlora.py` configures it.

    `SFTTrainer._prepare_dataset` reads only the tokenizer, the chat template and the
    completion-only flag from the trainer, so it runs on a bare instance: building a real trainer
    means loading the model, which for an 8B checkpoint is minutes spent to look at labels. A
    test compares this with a real trainer's prepared dataset.
    """
    import datasets
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SFTConfig's deprecation notices: not the user's concern
        args = SFTConfig(
            output_dir="unused",  # never created: nothing here saves
            max_length=max_length,
            completion_only_loss=True,  # as train/qlora.py
            report_to=[],
            bf16=False,  # SFTConfig's default demands a GPU; precision plays no part here
        )
    trainer = SFTTrainer.__new__(SFTTrainer)
    trainer._tokenizer = tokenizer
    trainer.chat_template = None
    trainer.completion_only_loss = True
    dataset = Dataset.from_list([{"prompt": i.prompt, "completion": i.completion} for i in items])
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        prepared = SFTTrainer._prepare_dataset(
            trainer,
            dataset,
            tokenizer,
            args,
            packing=False,
            formatting_func=None,
            dataset_name="check",
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    return [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in prepared]


def trl_examples(
    items: Sequence[Item], tokenizer: PreTrainedTokenizerBase, max_length: int | None
) -> list[dict[str, list[int]]]:
    """What the model is given for each item: TRL's prepared example through TRL's default
    collator (`input_ids`, and `labels` with -100 where the loss is masked). An item that TRL
    drops (nothing left to train after truncation) is missing from the list."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = DataCollatorForLanguageModeling(pad_token_id=pad)
    out = []
    for example in _trl_prepare(items, tokenizer, max_length):
        batch = collate([example])
        out.append(
            {
                "input_ids": [int(x) for x in batch["input_ids"][0].tolist()],
                "labels": [int(x) for x in batch["labels"][0].tolist()],
            }
        )
    return out


def quiet_libraries() -> None:
    """Warnings and info logs of the ML libraries say nothing a data check's user can act on."""
    warnings.filterwarnings("ignore")
    for name in (
        "bitsandbytes",
        "kernels",
        "transformers",
        "trl",
        "datasets",
        "accelerate",
        "peft",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)


_WORKER = "from tunegate.data.checks import _worker; _worker()"
_TOKENIZER_ERROR = 3  # a worker's exit status when the model directory has no tokenizer


class _Child:
    """One worker process (`_worker` in `mode`): JSON in on stdin, JSON out on stdout."""

    def __init__(self, model_dir: str, mode: str) -> None:
        self.model_dir = model_dir
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, model_dir, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # tunegate.cli turns the tokenizers' thread pool off: training forks dataloader
            # workers, and a fork after the pool has run makes tokenizers warn and fall back.
            # The worker forks nothing, and two threads halve its tokenizing time.
            env={**os.environ, "TOKENIZERS_PARALLELISM": "true"},
        )
        self._reply: Future[tuple[str, str]] | None = None

    def send(self, payload: str) -> None:
        # communicate() in a thread: the worker reads only after its imports, and a large
        # payload would block this process on a full pipe meanwhile.
        executor = ThreadPoolExecutor(max_workers=1)
        self._reply = executor.submit(self._proc.communicate, payload)
        executor.shutdown(wait=False)  # its thread ends with this one task

    def receive(self) -> Any:
        if self._reply is None:
            raise RuntimeError("receive() before send()")
        out, err = self._reply.result()
        if self._proc.returncode == _TOKENIZER_ERROR:
            raise UserError(
                f"model.name: cannot load a tokenizer from {self.model_dir}: "
                + err.strip().splitlines()[-1]
            )
        if self._proc.returncode != 0:
            raise RuntimeError(f"a tokenizer worker failed:\n{err[-4000:]}")
        return json.loads(out.strip().splitlines()[-1])  # a library may print before it

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


class TokenWorker:
    """The tokenizer side of the checks in two worker processes, started before the items are
    known: one imports transformers and runs `encode_like_trl`, the other imports TRL (torch,
    peft, bitsandbytes) and runs `eos_check` through TRL's own preparation.

    Those imports cost seconds of CPU each, and this process never needs them: it loads, pairs,
    selects and compares meanwhile. Spread over the cores this way, `tunegate data check` on
    10,000 items stays under 10 s on 2 cores (bench/data_check.py). Plain `python -c` children,
    not multiprocessing: spawn re-imports the caller's `__main__` (which fails for a script read
    from stdin), and fork would copy the tokenizers' thread pool.

        with TokenWorker(model_dir) as worker:
            worker.submit([control_items, experiment_items])
            ...  # other work meanwhile
            (encoded, eos), (encoded_e, eos_e) = worker.result()
    """

    def __init__(self, model_dir: str | Path) -> None:
        self._encode = _Child(str(model_dir), "encode")
        self._eos = _Child(str(model_dir), "eos")

    def submit(self, groups: Sequence[Sequence[Item]], *, sample: int = 2) -> None:
        """Send the items; `eos_check` runs the first `sample` of each group through TRL."""
        # Only what tokenizing needs; the items were validated when they were loaded.
        payload = json.dumps(
            {
                "sample": sample,
                "groups": [[[i.id, i.prompt, i.completion] for i in g] for g in groups],
            }
        )
        self._encode.send(payload)
        self._eos.send(payload)

    def result(self) -> list[tuple[list[Encoded], CheckResult]]:
        """Per group: every item's `Encoded`, and the `eos_check` result."""
        encoded = self._encode.receive()
        eos = self._eos.receive()
        return [
            ([Encoded(*row) for row in codes], CheckResult(**check))
            for codes, check in zip(encoded, eos, strict=True)
        ]

    def close(self) -> None:
        self._encode.close()
        self._eos.close()

    def __enter__(self) -> TokenWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker() -> None:
    """A TokenWorker child: imports first (while the parent works), then read, compute, print."""
    quiet_libraries()
    model_dir, mode = sys.argv[1:3]
    if mode == "eos":
        import trl.trainer.sft_trainer  # noqa: F401  (the slow part)
    from transformers import AutoTokenizer

    from tunegate.data.items import Item

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        print(str(err).replace("\n", " "), file=sys.stderr)
        sys.exit(_TOKENIZER_ERROR)
    payload = json.loads(sys.stdin.read())
    out: list[Any] = []
    for group in payload["groups"]:
        items = [
            Item.model_construct(id=i, scenario="-", prompt=p, completion=c) for i, p, c in group
        ]
        if mode == "eos":
            out.append(eos_check(items, tokenizer, sample=payload["sample"]).to_json())
        else:
            out.append([astuple(e) for e in encode_like_trl(items, tokenizer)])
    print(json.dumps(out))


def eos_check(
    items: Sequence[Item],
    tokenizer: PreTrainedTokenizerBase,
    *,
    sample: int = 2,
    encoded: Sequence[Encoded] | None = None,
    prepared: Sequence[dict[str, list[int]]] | None = None,
) -> CheckResult:
    """Every training example must end with the tokenizer's EOS, trained, after its completion.

    Checked, not assumed: the first `sample` items go through TRL's own preparation and
    collator, untruncated (what `max_length` cuts is `token_lengths`' finding), which also
    confirms that `encode_like_trl` counts what TRL builds. Every item is checked as text: an
    EOS inside a completion would teach the model to stop there. `prepared` is
    `trl_examples(items[:sample], tokenizer, None)` if already computed.
    """
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        return CheckResult(
            "eos",
            "fail",
            "the tokenizer has no EOS token: the model cannot learn where a completion ends",
        )
    messages: list[str] = []
    inside = [i.id for i in items if eos in i.completion.removesuffix(eos)]
    messages += [f"item '{i}': the completion contains {eos!r} before its end" for i in inside]
    checked = list(items[:sample])
    if encoded is None:
        encoded = encode_like_trl(checked, tokenizer)
    if prepared is None:
        prepared = trl_examples(checked, tokenizer, None)
    if len(prepared) != len(checked):
        raise ValueError(f"prepared has {len(prepared)} examples for {len(checked)} items")
    wrong: list[str] = []
    for item, e, example in zip(checked, encoded, prepared, strict=False):
        ids, labels = example["input_ids"], example["labels"]
        if not ids or ids[-1] != eos_id or labels[-1] != eos_id:
            wrong.append(item.id)
            messages.append(
                f"item '{item.id}': TRL's training example does not end with a trained EOS "
                f"({eos!r}, id {eos_id}): last token {ids[-1] if ids else None}, "
                f"label {labels[-1] if labels else None}"
            )
        masked = sum(label == -100 for label in labels)
        if (len(ids), masked) != (e.tokens, e.prompt_tokens):
            wrong.append(item.id)
            messages.append(
                f"item '{item.id}': TRL builds {len(ids)} tokens ({masked} masked), tunegate "
                f"counted {e.tokens} ({e.prompt_tokens} masked): the token-length check does "
                "not match this TRL version"
            )
    verdict: Verdict = "fail" if inside or wrong else "ok"
    if verdict == "ok":
        summary = (
            f"TRL appends {eos!r} (id {eos_id}) after the completion and trains on it "
            f"(verified on {_ids([i.id for i in checked])}); no completion contains it"
        )
    else:
        summary = f"{len(inside) + len(set(wrong))} item(s) with an EOS problem"
    return CheckResult(
        "eos",
        verdict,
        summary,
        messages,
        {
            "eos_token": eos,
            "eos_token_id": eos_id,
            "verified": [i.id for i in checked],
            "eos_inside": inside,
        },
    )


TokenStatus = Literal["trained", "masked", "cut"]


@dataclass(frozen=True)
class PreviewToken:
    index: int
    id: int
    text: str
    status: TokenStatus  # cut: beyond max_length, never seen in training


@dataclass
class Preview:
    """An item's training example token by token, as TRL prepares and collates it."""

    item_id: str
    max_length: int
    tokens: list[PreviewToken]
    dropped: bool  # TRL drops the example: after truncation no token is trained

    def count(self, status: TokenStatus) -> int:
        return sum(t.status == status for t in self.tokens)


def label_mask_preview(item: Item, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Preview:
    """Which tokens of `item` are trained and which are masked: TRL's prepared example through
    TRL's collator, so this is what the loss sees (like Axolotl's `--debug`). Tokens past
    `max_length` are shown as `cut`."""
    kept = trl_examples([item], tokenizer, max_length)
    [full] = trl_examples([item], tokenizer, None)  # untruncated, to show what is cut
    if kept:
        kept_ids, labels = kept[0]["input_ids"], kept[0]["labels"]
    else:
        kept_ids = full["input_ids"][:max_length]
        labels = [-100] * len(kept_ids)
    tokens = []
    for k, token_id in enumerate(full["input_ids"]):
        status: TokenStatus = (
            "cut" if k >= len(kept_ids) else "trained" if labels[k] != -100 else "masked"
        )
        tokens.append(PreviewToken(k, token_id, str(tokenizer.decode([token_id])), status))
    return Preview(item.id, max_length, tokens, dropped=not kept)
