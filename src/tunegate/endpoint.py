"""The one HTTP path to OpenAI-compatible endpoints: a JSON POST with retries.

Generation (`generate.EndpointBackend`) and the LLM judge (`evaluate.judge`) both go through
`post_json`, so retry policy, authentication and error wording live in one place.

What is retried is what a later attempt can fix: 429 (rate limited), 5xx (an overloaded or
restarting server), connection errors (refused, reset, dropped mid-body) and timeouts. Any other
4xx is the request's fault and fails at once, as does a response whose body is not a JSON object
(a proxy's HTML page, a wrong URL): retrying either only spends time. Waits grow exponentially
with jitter, so clients that failed together do not retry together; a numeric `Retry-After` from
the server replaces the computed wait, and every wait is capped so one bad header cannot stall a
run.

The API key only ever goes into the `Authorization` header: no message, log line or exception
built here contains it (a server that echoes it back in an error body is redacted too).
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

import requests
from requests.exceptions import ChunkedEncodingError

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0  # cap on one wait, computed or Retry-After: a run must not stall on a header
_BODY_EXCERPT = 200  # characters of an error body worth quoting in a one-line message


class EndpointError(Exception):
    """An endpoint failed for good (after any retries). `str()` is one line naming the URL;
    `status` is the last HTTP status seen, None when no response came back."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _one_line(text: str, api_key: str | None) -> str:
    if api_key:
        text = text.replace(api_key, "***")
    text = " ".join(text.split())
    return text if len(text) <= _BODY_EXCERPT else text[: _BODY_EXCERPT - 1] + "…"


def _cause(err: requests.RequestException) -> str:
    """The useful end of requests' nested message ("[Errno 111] Connection refused"), else the
    exception's class ("ReadTimeout")."""
    found = re.search(r"\[Errno -?\d+\][^'\")]*", str(err))
    return found.group(0).strip() if found else type(err).__name__


def _retry_after(response: requests.Response) -> float | None:
    """The server's numeric `Retry-After` in seconds; an HTTP-date form is ignored (rare from
    APIs, and the computed backoff is a fine stand-in)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _backoff(attempt: int, backoff_s: float) -> float:
    # "Equal jitter": half the exponential step is fixed, half random, so a retry never comes
    # back immediately yet concurrent clients spread out.
    step = backoff_s * (2**attempt)
    return min(MAX_WAIT_S, step / 2 + random.uniform(0, step / 2))


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    api_key: str | None = None,
    timeout_s: float = 60.0,
    max_retries: int = 4,
    backoff_s: float = 1.0,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """POST `payload` as JSON and return the JSON object the server answers.

    Up to `max_retries` retries after the first attempt (see the module docstring for which
    failures are retried). `timeout_s` bounds connecting and each wait for data (requests has no
    timeout by default: a stalled server would hang the run). Raises `EndpointError` once the
    request has failed for good.
    """
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    post = session.post if session is not None else requests.post
    attempts = max(0, max_retries) + 1
    for attempt in range(attempts):
        last = attempt == attempts - 1
        tried = f"after {attempt + 1} attempt{'s' if attempt else ''}"
        try:
            response = post(url, json=payload, headers=headers, timeout=timeout_s)
        # ChunkedEncodingError: the connection dropped mid-body, as transient as a refused one.
        except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as err:
            # ConnectTimeout is both a ConnectionError and a Timeout: it reads "timed out".
            what = "timed out" if isinstance(err, requests.Timeout) else "connection failed"
            if last:
                raise EndpointError(f"POST {url}: {what} {tried} ({_cause(err)})") from None
            wait = _backoff(attempt, backoff_s)
            log.debug("POST %s: %s; retrying in %.2f s", url, what, wait)
            time.sleep(wait)
            continue
        except requests.RequestException as err:  # an invalid URL, a bad scheme: not transient
            raise EndpointError(f"POST {url}: {_one_line(str(err), api_key)}") from None

        status = response.status_code
        if status == 429 or status >= 500:
            if last:
                raise EndpointError(
                    f"POST {url}: HTTP {status} {tried}: {_one_line(response.text, api_key)}",
                    status=status,
                )
            wait = _retry_wait(response, attempt, backoff_s)
            log.debug("POST %s: HTTP %d; retrying in %.2f s", url, status, wait)
            time.sleep(wait)
            continue
        return _json_object(url, response, api_key)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_wait(response: requests.Response, attempt: int, backoff_s: float) -> float:
    """The server's `Retry-After` (capped) when it gives one, else the computed backoff."""
    server_wait = _retry_after(response)
    return min(MAX_WAIT_S, server_wait) if server_wait is not None else _backoff(attempt, backoff_s)


def _json_object(url: str, response: requests.Response, api_key: str | None) -> dict[str, Any]:
    """The JSON object of an answer that is not retried; EndpointError for a client error or a
    body that is not a JSON object."""
    status = response.status_code
    if status >= 400:
        raise EndpointError(
            f"POST {url}: HTTP {status}: {_one_line(response.text, api_key)}", status=status
        )
    try:
        body = response.json()
    except ValueError:
        raise EndpointError(
            f"POST {url}: HTTP {status} but the body is not JSON: "
            f"{_one_line(response.text, api_key)!r}",
            status=status,
        ) from None
    if not isinstance(body, dict):
        raise EndpointError(
            f"POST {url}: HTTP {status} but the JSON body is a {type(body).__name__}, "
            "not an object",
            status=status,
        )
    return body
