"""The judge, the OpenAI-compatible server and the HTTP client, over real loopback HTTP.

Nothing is patched: `ModelServer` serves tiny-llama, and `Scripted` is a stdlib HTTP server
defined here that answers like an OpenAI chat endpoint and can be told to fail its first K
requests (429, 500, a stall past the client's timeout, ...). Request counts, concurrency and
headers are observed server-side, which is where "paid once" and "at most N in flight" matter.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tunegate.endpoint import EndpointError, post_json
from tunegate.errors import UserError
from tunegate.evaluate.judge import (
    COHERENCE,
    RUBRICS,
    Judge,
    JudgeSettings,
    Rubric,
    parse_verdict,
)
from tunegate.evaluate.server import ModelServer

FAST = {"backoff_s": 0.01, "timeout_s": 5.0}  # retries in milliseconds, not seconds


# -- a scripted OpenAI-compatible endpoint ----------------------------------------------------


def _verdict(score: int = 4, reason: str = "Clear and on-task.") -> str:
    return json.dumps({"score": score, "reason": reason})


@dataclass
class Scripted:
    """A chat-completions endpoint whose first `fail_first` requests fail as `fail_mode`."""

    fail_first: int = 0
    fail_mode: str = "500"  # 429 | 500 | 400 | 401 | stall | html
    stall_s: float = 1.0  # how long a "stall" holds the request (past the client's timeout)
    delay_s: float = 0.0  # every request takes this long: lets concurrency show server-side
    content: Callable[[dict[str, Any]], str] = lambda body: _verdict()
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 120, "completion_tokens": 15}
    )
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's output clean

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                with script._lock:
                    script.requests += 1
                    number = script.requests
                    script.in_flight += 1
                    script.max_in_flight = max(script.max_in_flight, script.in_flight)
                    script.bodies.append(json.loads(raw))
                    script.auth.append(self.headers.get("Authorization"))
                try:
                    time.sleep(script.delay_s)
                    if number <= script.fail_first:
                        self._fail(script.fail_mode)
                    else:
                        self._answer(json.loads(raw))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client that timed out has gone: nothing to answer
                finally:
                    with script._lock:
                        script.in_flight -= 1

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _fail(self, mode: str) -> None:
                error = json.dumps({"error": {"message": f"scripted {mode}"}}).encode()
                if mode == "stall":
                    time.sleep(script.stall_s)
                    self._answer({})
                elif mode == "html":
                    self._send(200, b"<html>gateway</html>", {"Content-Type": "text/html"})
                elif mode == "429":
                    self._send(429, error, {"Retry-After": "0"})
                elif mode == "401":  # a server that echoes the credentials it got
                    echo = f"bad key: {self.headers.get('Authorization')}".encode()
                    self._send(401, echo, {"Content-Type": "text/plain"})
                else:
                    self._send(int(mode), error, {"Content-Type": "application/json"})

            def _answer(self, body: dict[str, Any]) -> None:
                answer: dict[str, Any] = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": script.content(body)},
                            "finish_reason": "stop",
                        }
                    ],
                }
                if script.usage is not None:
                    answer["usage"] = script.usage
                data = json.dumps(answer).encode()
                self._send(200, data, {"Content-Type": "application/json"})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one, at every test's teardown.
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(**kwargs: Any) -> Scripted:
        made.append(Scripted(**kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def settings(url: str, **overrides: Any) -> JudgeSettings:
    base: dict[str, Any] = {"base_url": url, "model": "judge-1", "api_key_env": None, **FAST}
    return JudgeSettings(**{**base, **overrides})


def cases(k: int) -> list[tuple[str, str, str | None]]:
    return [(f"Write function {i}.", f"def f{i}():\n    return {i}\n", None) for i in range(k)]


# -- the tiny-llama server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Iterator[str]:
    from tunegate.models import ensure_tiny_llama

    with ModelServer(ensure_tiny_llama(), model_id="tiny-llama") as server:
        assert server.base_url is not None
        yield server.base_url


def complete(url: str, **body: Any) -> dict[str, Any]:
    response = requests.post(f"{url}/completions", json={"model": "tiny-llama", **body}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def texts(answer: dict[str, Any]) -> list[str]:
    return [c["text"] for c in sorted(answer["choices"], key=lambda c: c["index"])]


def test_models_and_health(tiny: str) -> None:
    models = requests.get(f"{tiny}/models", timeout=10).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny-llama"]
    assert models["data"][0]["object"] == "model"
    health = requests.get(tiny.removesuffix("/v1") + "/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_completions_samples_are_reproducible_with_a_seed(tiny: str) -> None:
    body = {"prompt": "def add(a, b):", "n": 3, "max_tokens": 12, "temperature": 1.0, "seed": 7}
    first = complete(tiny, **body)
    assert first["object"] == "text_completion" and first["model"] == "tiny-llama"
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] in ("stop", "length") for c in first["choices"])
    usage = first["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 3 * 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert texts(complete(tiny, **body)) == texts(first)
    # A random model at temperature 1: another seed gives other samples.
    assert texts(complete(tiny, **{**body, "seed": 8})) != texts(first)


def test_greedy_is_deterministic_and_batches_keep_prompt_order(tiny: str) -> None:
    greedy = {"max_tokens": 10, "temperature": 0}
    one = texts(complete(tiny, prompt="def add(a, b):", **greedy))
    assert texts(complete(tiny, prompt="def add(a, b):", **greedy)) == one
    assert texts(complete(tiny, prompt="def add(a, b):", n=2, **greedy)) == one * 2
    other = texts(complete(tiny, prompt="SELECT name FROM users", **greedy))
    both = texts(complete(tiny, prompt=["def add(a, b):", "SELECT name FROM users"], **greedy))
    assert both == one + other  # index = prompt position (left padding changes nothing)


def test_stop_cuts_the_text(tiny: str) -> None:
    full = texts(complete(tiny, prompt="class Example:", max_tokens=24, temperature=0))[0]
    stop = full[len(full) // 2 :][:2]
    cut = complete(tiny, prompt="class Example:", max_tokens=24, temperature=0, stop=[stop])
    assert cut["choices"][0]["text"] == full[: full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_chat_completions(tiny: str) -> None:
    body = {
        "model": "tiny-llama",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
        ],
        "max_tokens": 8,
        "temperature": 0,
        "n": 2,
        "response_format": {"type": "json_object"},  # accepted, ignored
    }
    response = requests.post(f"{tiny}/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert len(answer["choices"]) == 2
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)
    assert answer["choices"][1]["message"] == message  # greedy twice is one answer
    assert answer["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("completions", {}, "prompt"),
        ("completions", {"prompt": "x", "n": 0}, "n"),
        ("completions", {"prompt": "x", "temperature": -1}, "temperature"),
        ("completions", {"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
        ("completions", {"prompt": "x", "max_tokens": 5000}, "max_tokens"),  # past the context
        ("completions", {"prompt": "x", "stream": True}, "stream"),
        ("completions", {"prompt": [1, 2, 3]}, "prompt"),
        ("chat/completions", {"messages": []}, "messages"),
        ("chat/completions", {"messages": [{"content": "no role"}]}, "messages"),
        ("completions", "not json", None),
    ],
)
def test_bad_request_is_a_400_with_an_openai_error(
    tiny: str, path: str, body: Any, param: str | None
) -> None:
    data = body if isinstance(body, str) else json.dumps(body)
    response = requests.post(
        f"{tiny}/{path}", data=data, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_adapter_is_served(tmp_path: Path) -> None:
    """A fresh LoRA adapter (B = 0) changes nothing: served with it, greedy matches the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunegate.models import ensure_tiny_llama

    base = ensure_tiny_llama()
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    peft.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "adapter")
    body = {"prompt": "def add(a, b):", "max_tokens": 8, "temperature": 0}
    with ModelServer(base) as plain, ModelServer(base, adapter_dir=tmp_path / "adapter") as lora:
        assert lora.model_id == "adapter"
        assert texts(complete(str(lora.base_url), **body)) == texts(
            complete(str(plain.base_url), **body)
        )


def test_chat_uses_the_tokenizers_template(tmp_path: Path) -> None:
    import shutil

    from transformers import AutoTokenizer

    from tunegate.models import ensure_tiny_llama

    model = tmp_path / "templated"
    shutil.copytree(ensure_tiny_llama(), model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tokenizer.save_pretrained(model)
    rendered = "<|user|>Say hi.<|assistant|>"
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    with ModelServer(model) as server:
        answer = requests.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    expected = len(tokenizer(rendered, add_special_tokens=False).input_ids)
    assert answer.json()["usage"]["prompt_tokens"] == expected


def test_serve_rejects_what_it_cannot_serve(tmp_path: Path) -> None:
    from tunegate.cli.serve import serve

    with pytest.raises(
        UserError, match=r"neither an embedded model .* nor a local model directory"
    ):
        serve(str(tmp_path / "missing"), None, "127.0.0.1", 0)
    with pytest.raises(UserError, match=r"no adapter_config\.json"):
        serve("tiny-llama", tmp_path, "127.0.0.1", 0)
    with pytest.raises(UserError, match="not a model directory"):
        ModelServer(tmp_path)


def test_judge_on_the_tiny_model_is_not_valid_but_paid(tiny: str, tmp_path: Path) -> None:
    """A random model cannot write the verdict JSON: no score is guessed, and the call counts.

    The judge prompt is ~970 tiny-llama tokens of its 1024 context, hence the small max_tokens.
    """
    judge = Judge(settings(tiny, model="tiny-llama", max_tokens=16), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "Say hi.", "Hi!")
    assert verdict.value is None and verdict.raw is None and not verdict.cached
    assert verdict.reason.startswith("judge output not valid")
    usage = judge.usage
    assert (usage.calls, usage.failures, usage.cache_hits) == (1, 1, 0)
    assert usage.prompt_tokens > 900 and 0 < usage.completion_tokens <= 16
    judge.judge(COHERENCE, "Say hi.", "Hi!")
    assert judge.usage.calls == 2  # an invalid verdict is not cached: asking again pays again


# -- the judge against the scripted endpoint ---------------------------------------------------


def test_request_shape_and_a_valid_verdict(
    scripted: Callable[..., Scripted], tmp_path: Path
) -> None:
    server = scripted()
    judge = Judge(settings(server.url), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "Write add.", "def add(a, b): return a + b", "ref")
    assert verdict.value == pytest.approx(0.75) and verdict.raw == 4
    assert verdict.spread is None and verdict.reason == "Clear and on-task."
    body = server.bodies[0]
    assert body["model"] == "judge-1" and body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert COHERENCE.text in system["content"] and '"score"' in system["content"]
    assert "def add(a, b)" in user["content"] and "<REFERENCE>\nref" in user["content"]
    assert server.auth == [None]  # no api_key_env: no Authorization header


@pytest.mark.parametrize("mode", ["429", "500", "503", "stall"])
def test_transient_failures_are_retried(
    scripted: Callable[..., Scripted], tmp_path: Path, mode: str
) -> None:
    server = scripted(fail_first=2, fail_mode=mode, stall_s=1.0)
    s = settings(server.url, max_retries=3, timeout_s=0.3)
    judge = Judge(s, tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "p", "r")
    assert verdict.value == pytest.approx(0.75)
    assert server.requests == 3
    assert (judge.usage.calls, judge.usage.failures) == (1, 0)


def test_retries_run_out(scripted: Callable[..., Scripted], tmp_path: Path) -> None:
    server = scripted(fail_first=100, fail_mode="500")
    judge = Judge(settings(server.url, max_retries=2), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "p", "r")
    assert verdict.value is None
    assert "HTTP 500 after 3 attempts" in verdict.reason and server.url in verdict.reason
    assert server.requests == 3
    assert (judge.usage.calls, judge.usage.failures, judge.usage.cost_usd) == (0, 1, 0.0)


def test_a_400_is_not_retried(scripted: Callable[..., Scripted], tmp_path: Path) -> None:
    server = scripted(fail_first=100, fail_mode="400")
    judge = Judge(settings(server.url, max_retries=4), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "p", "r")
    assert verdict.value is None and "HTTP 400" in verdict.reason
    assert server.requests == 1
    with pytest.raises(EndpointError) as caught:
        post_json(f"{server.url}/chat/completions", {}, backoff_s=0.01)
    assert caught.value.status == 400 and "\n" not in str(caught.value)


def test_retry_after_replaces_the_backoff(scripted: Callable[..., Scripted]) -> None:
    server = scripted(fail_first=2, fail_mode="429")
    started = time.monotonic()
    # A 10 s backoff would take 15 s or more; Retry-After: 0 retries at once.
    post_json(f"{server.url}/chat/completions", {}, backoff_s=10.0)
    assert time.monotonic() - started < 3 and server.requests == 3


def test_post_json_errors(scripted: Callable[..., Scripted]) -> None:
    server = scripted(fail_first=100, fail_mode="html")
    with pytest.raises(EndpointError, match="not JSON") as caught:
        post_json(f"{server.url}/chat/completions", {}, backoff_s=0.01)
    assert caught.value.status == 200 and server.requests == 1  # not retried
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EndpointError, match="connection failed after 2 attempts") as caught:
        post_json(f"http://127.0.0.1:{port}/v1/x", {}, max_retries=1, backoff_s=0.01)
    assert caught.value.status is None


def test_bearer_auth_and_the_key_never_shows(
    scripted: Callable[..., Scripted], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret-123")
    server = scripted(fail_first=1, fail_mode="401")
    judge = Judge(settings(server.url, api_key_env="TEST_JUDGE_KEY"), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "p", "r")
    assert server.auth == ["Bearer sk-secret-123"]
    assert "HTTP 401" in verdict.reason and "sk-secret-123" not in verdict.reason


def test_usage_and_cost(scripted: Callable[..., Scripted], tmp_path: Path) -> None:
    server = scripted(usage={"prompt_tokens": 120, "completion_tokens": 15})
    s = settings(
        server.url,
        price_per_call_usd=0.001,
        price_per_1k_prompt_usd=0.5,
        price_per_1k_completion_usd=2.0,
    )
    judge = Judge(s, tmp_path / "c.sqlite")
    judge.judge_many(COHERENCE, cases(4))
    usage = judge.usage
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (4, 480, 60)
    per_call = 0.001 + 120 / 1000 * 0.5 + 15 / 1000 * 2.0  # 0.091
    assert usage.cost_usd == pytest.approx(4 * per_call, rel=1e-12, abs=0)
    # No `usage` in the answer: the per-call price still applies, tokens count zero.
    bare = scripted(usage=None)
    judge = Judge(settings(bare.url, price_per_call_usd=0.002), tmp_path / "d.sqlite")
    judge.judge(COHERENCE, "p", "r")
    assert (judge.usage.cost_usd, judge.usage.prompt_tokens) == (0.002, 0)


def test_cache_pays_once(scripted: Callable[..., Scripted], tmp_path: Path) -> None:
    server = scripted(content=lambda body: _verdict(1 + len(body["messages"][1]["content"]) % 5))
    cache = tmp_path / "deep" / "dir" / "judge.sqlite"  # parent directories are created
    first = Judge(settings(server.url), cache).judge_many(COHERENCE, cases(5))
    assert server.requests == 5 and not any(j.cached for j in first)
    again = Judge(settings(server.url), cache)  # a new process would see the same file
    second = again.judge_many(COHERENCE, cases(5))
    assert server.requests == 5  # zero new requests
    assert all(j.cached for j in second)
    assert [j.value for j in second] == [j.value for j in first]
    assert [j.reason for j in second] == [j.reason for j in first]
    assert (again.usage.cache_hits, again.usage.calls, again.usage.cost_usd) == (5, 0, 0.0)
    # Another rubric version, another judge model or another reference: not the same question.
    revised = Rubric("coherence", "2", COHERENCE.text, COHERENCE.scale)
    assert revised.hash != COHERENCE.hash
    again.judge(revised, *cases(1)[0])
    Judge(settings(server.url, model="judge-2"), cache).judge(COHERENCE, *cases(1)[0])
    again.judge(COHERENCE, cases(1)[0][0], cases(1)[0][1], "a reference")
    assert server.requests == 8


def test_concurrency_is_bounded_and_order_kept(
    scripted: Callable[..., Scripted], tmp_path: Path
) -> None:
    # The score is read off the prompt, so a mixed-up order would show.
    server = scripted(
        delay_s=0.1,
        content=lambda body: _verdict(1 + int(body["messages"][1]["content"].split()[3][0]) % 5),
    )
    judge = Judge(settings(server.url, concurrency=3), tmp_path / "c.sqlite")
    ticks: list[int] = []
    results = judge.judge_many(COHERENCE, cases(10), progress=ticks.append)
    assert server.max_in_flight == 3  # bounded, and actually concurrent
    assert [j.raw for j in results] == [1 + i % 5 for i in range(10)]
    assert sum(ticks) == 10


def test_repeats_measure_judge_noise(scripted: Callable[..., Scripted], tmp_path: Path) -> None:
    server = scripted(content=lambda body: _verdict(2 + body["seed"]))  # scores 2, 3, 4
    judge = Judge(settings(server.url, repeats=3), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "p", "r")
    assert server.requests == 3 and [b["seed"] for b in server.bodies] == [0, 1, 2]
    assert verdict.raw == pytest.approx(3.0) and verdict.spread == pytest.approx(1.0)
    assert verdict.value == pytest.approx(0.5)
    assert judge.judge(COHERENCE, "p", "r").cached and server.requests == 3


@pytest.mark.parametrize("concurrency", [1, 4])
def test_budget_stops_calls(
    scripted: Callable[..., Scripted], tmp_path: Path, concurrency: int
) -> None:
    server = scripted(delay_s=0.05)
    s = settings(server.url, price_per_call_usd=0.01, budget_usd=0.035, concurrency=concurrency)
    judge = Judge(s, tmp_path / "c.sqlite")
    results = judge.judge_many(COHERENCE, cases(6))
    assert server.requests == 3  # a fourth call would take spending to $0.04
    assert sum(j.value is not None for j in results) == 3
    stopped = [j for j in results if j.value is None]
    # Spent plus in flight: concurrent workers see the calls the others have not finished.
    assert all(j.reason == "judge budget reached ($0.03 of $0.035)" for j in stopped)
    assert judge.usage.cost_usd == pytest.approx(0.03)


@pytest.mark.parametrize(
    "content",
    [
        "I would give this a 4.",
        '{"score": 4.0, "reason": "ok"}',
        '{"score": "4", "reason": "ok"}',
        '{"score": 9, "reason": "ok"}',
        '{"score": 0, "reason": "ok"}',
        '{"reason": "no score"}',
        '{"score": 4}',
        '[4, "ok"]',
        "",
    ],
)
def test_malformed_verdicts_are_not_judged(
    scripted: Callable[..., Scripted], tmp_path: Path, content: str
) -> None:
    server = scripted(content=lambda body: content)
    judge = Judge(settings(server.url), tmp_path / "c.sqlite")
    verdict = judge.judge(COHERENCE, "p", "r")
    assert verdict.value is None and verdict.raw is None
    assert verdict.reason.startswith("judge output not valid: ")
    assert "\n" not in verdict.reason
    assert (judge.usage.calls, judge.usage.failures) == (1, 1)  # paid for all the same
    judge.judge(COHERENCE, "p", "r")
    assert server.requests == 2  # not cached


def test_fenced_json_is_accepted() -> None:
    assert parse_verdict('```json\n{"score": 5, "reason": "Good."}\n```', COHERENCE) == (
        5,
        "Good.",
    )
    assert parse_verdict('  {"score": 1, "reason": "Gibberish.", "x": 1} ', COHERENCE) == (
        1,
        "Gibberish.",
    )
    assert isinstance(parse_verdict('```python\n{"score": 5}\n```', COHERENCE), str)


def test_rubrics_are_pinned() -> None:
    assert RUBRICS == {"coherence": COHERENCE}
    assert COHERENCE.scale == (1, 5) and len(COHERENCE.hash) == 16
    for level in range(1, 6):
        assert f"\n{level} - " in COHERENCE.text or COHERENCE.text.startswith(f"{level} - ")
    with pytest.raises(ValueError, match="low to high"):
        Rubric("x", "1", "text", (5, 1))
