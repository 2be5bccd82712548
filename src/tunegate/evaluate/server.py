"""An OpenAI-compatible HTTP server for one local transformers model (and optional peft adapter).

`tunegate serve` puts a trained arm behind the same API a hosted model or vLLM offers, so the
endpoint generation backend and the LLM judge can be exercised end to end on a laptop, with no
GPU and nothing downloaded. It is a test and demo server, not a production one: the standard
library's `ThreadingHTTPServer` accepts requests concurrently, but a single lock serialises all
tokenizer and model work (one model in memory; a fast tokenizer is not safe to share across
threads either), so requests queue rather than batch.

The API subset:
- `GET /v1/models`, `GET /health`;
- `POST /v1/completions`: `prompt` (a string or a list of strings), `n`, `max_tokens`,
  `temperature` (0 is greedy), `top_p`, `seed`, `stop`;
- `POST /v1/chat/completions`: `messages`, rendered with the tokenizer's chat template, or, for
  a tokenizer without one (tiny-llama), as a plain "role: content" transcript ending with
  "assistant:"; the same sampling fields; `response_format` is accepted and ignored (the model
  is not constrained to JSON, which is exactly what the judge's strict parsing must cope with).

Responses carry OpenAI's shapes, `usage` included; a bad request gets a 400 with OpenAI's error
object. `stop` is applied after generation (the text is cut at the earliest stop string), so
`completion_tokens` then counts the kept text re-encoded. A `seed` re-seeds torch under the lock
before generating, so the same request with the same seed gives the same samples.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tunegate.errors import UserError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024  # a request bigger than this is a mistake, not a prompt
MAX_N = 128  # OpenAI's own cap on `n`
MAX_ROWS_PER_PASS = 64  # prompts × samples per `generate` call: bounds memory on a big request
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default `max_tokens` for /v1/completions
# OpenAI lets a chat reply run to the context's end; a CPU model that never emits EOS would then
# hold the lock for minutes, so an unset `max_tokens` is bounded instead.
DEFAULT_CHAT_TOKENS = 256


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class _Sampling:
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]


@dataclass(frozen=True)
class _Choice:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens reached)
    tokens: int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name)
    if value is None:  # clients send null for "unset"
        return default
    if not _is_int(value) or not lo <= value <= hi:
        raise _BadRequest(f"'{name}' must be an integer from {lo} to {hi}, got {value!r}", name)
    return int(value)


def _float_field(
    body: dict[str, Any], name: str, default: float, lo: float, hi: float, *, lo_open: bool = False
) -> float:
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not (lo < value <= hi if lo_open else lo <= value <= hi):
        bound = f"above {lo}" if lo_open else f"from {lo}"
        raise _BadRequest(f"'{name}' must be a number {bound} to {hi}, got {value!r}", name)
    return float(value)


def _sampling(body: dict[str, Any], default_tokens: int) -> _Sampling:
    if body.get("stream"):
        raise _BadRequest("streaming is not supported by this server", "stream")
    if body.get("echo"):
        raise _BadRequest("'echo' is not supported by this server", "echo")
    if body.get("logprobs"):
        raise _BadRequest("'logprobs' is not supported by this server", "logprobs")
    # Newer OpenAI clients send max_completion_tokens for chat; both mean the same here.
    tokens_field = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _BadRequest(f"'seed' must be an integer, got {seed!r}", "seed")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise _BadRequest("'stop' must be a string or a list of strings", "stop")
    return _Sampling(
        n=_int_field(body, "n", 1, 1, MAX_N),
        max_tokens=_int_field(body, tokens_field, default_tokens, 1, 1_000_000),
        temperature=_float_field(body, "temperature", 1.0, 0.0, 2.0),  # OpenAI's default, 1
        top_p=_float_field(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        seed=seed,
        stop=tuple(s for s in stops if s),
    )


def _message_text(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of content parts (text parts only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise _BadRequest(f"{where}: only text content parts are supported", "messages")
            if not isinstance(part.get("text"), str):
                raise _BadRequest(f"{where}: a text part needs a string 'text'", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise _BadRequest(f"{where}: 'content' must be a string or a list of parts", "messages")


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(f"{where} must be an object with a string 'role'", "messages")
        out.append(
            {"role": message["role"], "content": _message_text(message.get("content"), where)}
        )
    return out


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if (
        isinstance(prompt, list)
        and prompt
        and all(_is_int(p) or isinstance(p, list) for p in prompt)
    ):
        raise _BadRequest("token-id prompts are not supported; send text", "prompt")
    raise _BadRequest("'prompt' must be a string or a non-empty list of strings", "prompt")


def _error_body(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


class ModelServer:
    """Serves one local model on an OpenAI-compatible API from a daemon thread.

    `start()` loads the model (once) and returns the base URL, ending in `/v1`; `stop()` shuts
    the listener down. As a context manager it starts on entry and stops on exit. `model_id` is
    the name `/v1/models` reports and responses echo (any `model` a request names is served by
    this one model); by default the adapter's or the model's directory name.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        adapter_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        model_id: str | None = None,
    ) -> None:
        model_dir, adapter_dir = Path(model_dir), Path(adapter_dir) if adapter_dir else None
        if not (model_dir / "config.json").is_file():
            raise UserError("not a model directory (no config.json)", where=str(model_dir))
        if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
            raise UserError("not a peft adapter (no adapter_config.json)", where=str(adapter_dir))
        self.model_dir, self.adapter_dir = model_dir, adapter_dir
        self.host, self.port = host, port
        self.model_id = model_id or (adapter_dir or model_dir).name
        self.base_url: str | None = None
        self._lock = threading.Lock()  # one generate at a time: one model, one tokenizer
        self._model: Any = None
        self._tokenizer: Any = None
        self._context: int | None = None
        self._eos: set[int] = set()
        self._created = int(time.time())
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        # float32: exact and portable on CPU; serving speed is not this server's job.
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        self._context = getattr(model.config, "max_position_embeddings", None)
        if self.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter_dir)  # type: ignore[assignment]
        # transformers types `to` through a decorator whose first argument is the model.
        model.to(device).eval()  # type: ignore[arg-type]
        # The adapter directory holds the tokenizer training saved (special tokens may differ).
        has_tokenizer = self.adapter_dir is not None and any(
            (self.adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        )
        tokenizer = AutoTokenizer.from_pretrained(
            self.adapter_dir if has_tokenizer else self.model_dir
        )
        tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        if tokenizer.pad_token_id is None:  # many base tokenizers have none; EOS is the usual pad
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        self._eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        self._eos |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._model, self._tokenizer = model, tokenizer

    def start(self) -> str:
        if self.base_url is not None:
            return self.base_url
        if self._model is None:
            self._load()
        server_cls = ThreadingHTTPServer
        if ":" in self.host:  # an IPv6 literal; the stdlib server binds IPv4 by default

            class _V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_cls = _V6
        handler = type("_BoundHandler", (_Handler,), {"owner": self})
        httpd = server_cls((self.host, self.port), handler)
        httpd.daemon_threads = True  # a hung client must not keep the process alive on exit
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            args=(0.1,),  # poll interval (stdlib: 0.5 s): how long stop() may wait for the loop
            name=f"tunegate-serve:{self.port}",
            daemon=True,
        )
        self._thread.start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}/v1"
        return self.base_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.base_url = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- generation --------------------------------------------------------------------------

    def _generate(
        self, prompts: list[str], sampling: _Sampling, *, add_special_tokens: bool
    ) -> tuple[list[list[_Choice]], int]:
        """`sampling.n` choices per prompt, in prompt order, and the prompts' token count."""
        import torch

        tok, model = self._tokenizer, self._model
        with self._lock:
            lengths = [
                len(tok(p, add_special_tokens=add_special_tokens).input_ids) for p in prompts
            ]
            if min(lengths) == 0:
                raise _BadRequest("a prompt is empty (no tokens to continue from)", "prompt")
            if self._context is not None and max(lengths) + sampling.max_tokens > self._context:
                raise _BadRequest(
                    f"this model's maximum context length is {self._context} tokens; the prompt "
                    f"has {max(lengths)} and max_tokens asks for {sampling.max_tokens} more",
                    "max_tokens",
                )
            greedy = sampling.temperature == 0
            kwargs: dict[str, Any] = {"do_sample": False}
            if not greedy:
                kwargs = {
                    "do_sample": True,
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "top_k": 0,  # transformers defaults to top-k 50; OpenAI's API has no top-k
                    "num_return_sequences": sampling.n,
                }
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            # Greedy gives one answer per prompt; it is computed once and repeated n times.
            per_pass = max(1, MAX_ROWS_PER_PASS // (1 if greedy else sampling.n))
            rows: list[list[int]] = []
            for start in range(0, len(prompts), per_pass):
                batch = prompts[start : start + per_pass]
                enc = tok(
                    batch,
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=add_special_tokens,
                ).to(model.device)
                with torch.inference_mode():
                    out = model.generate(
                        **enc,
                        **kwargs,
                        max_new_tokens=sampling.max_tokens,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=sorted(self._eos) or None,
                    )
                rows += out[:, enc["input_ids"].shape[1] :].tolist()
            choices: list[list[_Choice]] = []
            for i in range(len(prompts)):
                if greedy:
                    choice = self._choice(rows[i], sampling)
                    choices.append([choice] * sampling.n)
                else:
                    own = rows[i * sampling.n : (i + 1) * sampling.n]
                    choices.append([self._choice(r, sampling) for r in own])
        return choices, sum(lengths)

    def _choice(self, row: list[int], sampling: _Sampling) -> _Choice:
        """One generated row → its text: cut at the first EOS (what follows is padding), then at
        the earliest stop string."""
        cut = next((k for k, t in enumerate(row) if t in self._eos), None)
        tokens = row if cut is None else row[:cut]
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        finish = "length" if cut is None else "stop"
        hits = [i for i in (text.find(s) for s in sampling.stop) if i >= 0]
        if hits:
            text = text[: min(hits)]
            finish = "stop"
            return _Choice(
                text, finish, len(self._tokenizer.encode(text, add_special_tokens=False))
            )
        return _Choice(text, finish, len(tokens))

    # -- endpoints ---------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_id,
                    "object": "model",
                    "created": self._created,
                    "owned_by": "tunegate",
                }
            ],
        }

    @staticmethod
    def _usage(prompt_tokens: int, choices: list[_Choice]) -> dict[str, int]:
        completion = sum(c.tokens for c in choices)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = _prompts(body)
        sampling = _sampling(body, DEFAULT_COMPLETION_TOKENS)
        per_prompt, prompt_tokens = self._generate(prompts, sampling, add_special_tokens=True)
        flat = [c for choices in per_prompt for c in choices]  # index = prompt * n + sample
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {"index": k, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                for k, c in enumerate(flat)
            ],
            "usage": self._usage(prompt_tokens, flat),
        }

    def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = _messages(body)
        sampling = _sampling(body, DEFAULT_CHAT_TOKENS)
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            special = False  # the template writes BOS and friends itself
            transcript = False
        else:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            prompt = "\n".join([*lines, "assistant:"])
            special = True
            transcript = True
            # The transcript invites the model to write the user's next turn too; cut it there.
            sampling = replace(sampling, stop=(*sampling.stop, "\nuser:"))
        (choices,), prompt_tokens = self._generate([prompt], sampling, add_special_tokens=special)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_id,
            "choices": [
                {
                    "index": k,
                    "message": {
                        "role": "assistant",
                        # "assistant:" is followed by a space in any natural continuation.
                        "content": c.text.lstrip() if transcript else c.text,
                    },
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for k, c in enumerate(choices)
            ],
            "usage": self._usage(prompt_tokens, choices),
        }


class _Handler(BaseHTTPRequestHandler):
    owner: ModelServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive: a client's session reuses its connection
    server_version = "tunegate-serve"

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; a CLI or a test run wants that opt-in.
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def do_GET(self) -> None:
        path = self._route()
        if path == "/v1/models":
            self._send(200, self.owner.models())
        elif path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, _error_body(f"no route GET {path}", "not_found_error"))

    def do_POST(self) -> None:
        path = self._route()
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True  # the body's end is unknown: the stream is unusable
            self._send(
                411, _error_body("a Content-Length header is required", "invalid_request_error")
            )
            return
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, _error_body("request body too large", "invalid_request_error"))
            return
        raw = self.rfile.read(int(length))
        endpoints = {
            "/v1/completions": self.owner.completions,
            "/v1/chat/completions": self.owner.chat_completions,
        }
        if path not in endpoints:
            self._send(404, _error_body(f"no route POST {path}", "not_found_error"))
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise _BadRequest("the request body must be a JSON object")
            self._send(200, endpoints[path](body))
        except json.JSONDecodeError as err:
            self._send(
                400, _error_body(f"the body is not valid JSON: {err}", "invalid_request_error")
            )
        except _BadRequest as err:
            self._send(400, _error_body(str(err), "invalid_request_error", err.param))
        except Exception as err:  # the client gets a 500 it can retry; the server keeps serving
            log.exception("POST %s failed", path)
            self._send(500, _error_body(f"{type(err).__name__}: {err}", "server_error"))
