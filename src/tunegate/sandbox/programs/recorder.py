"""The check recorder: codes a value canonically and writes its digest on the result channel.

The same text runs on both sides, so they cannot drift apart: the harness imports it to code the
expected literals (`sandbox.checks`), and the Python runner and worker carry it inlined into the
sandbox (`programs.source`). So it stays standard library only, imports `_blake2` and `os` inside
the functions that need them (every module a pre-warmed worker loads makes each of its forks
dearer), and has no `from __future__` import (it is inlined below the host program's).
"""

TYPE_CHECKING = False  # typing itself is not imported: see above
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def encode(v: "Any", strict: int = 0, budget: list[int] | None = None, depth: int = 0) -> str:
    """Canonical code of plain data: equal codes <=> Python's == (for `is`: strict bools).

    Any other type (an object with its own `__eq__`) codes as "?<type>", unequal to every
    literal. `budget` and `depth` bound the work a huge or deeply nested value can cost."""
    if budget is None:
        budget = [200000]
    budget[0] -= 1
    if budget[0] < 0 or depth > 100:
        return "?big"
    t = type(v)
    if t is bool:
        return f"B{v:d}" if strict else f"n:{v:x}"
    if t is int:
        return f"n:{v:x}"
    if t is float:
        if v != v:
            return "?nan"
        if v - v == 0 and v.is_integer():
            return f"n:{int(v):x}"
        return f"f:{v!r}"
    if t is str:
        return f"s{len(v)}:{v}"
    if v is None:
        return "N"
    if t is list or t is tuple:
        inner = ",".join([encode(x, 0, budget, depth + 1) for x in v])
        return ("L[" if t is list else "T[") + inner + "]"
    if t is dict:
        items = sorted(
            encode(k, 0, budget, depth + 1) + "=" + encode(x, 0, budget, depth + 1)
            for k, x in v.items()
        )
        return "D[" + ",".join(items) + "]"
    if t is set or t is frozenset:
        return "S[" + ",".join(sorted([encode(x, 0, budget, depth + 1) for x in v])) + "]"
    if t is bytes:
        return f"y{len(v)}:{v.hex()}"
    if t is complex:
        return encode(v.real) if v.imag == 0 else f"c:{v!r}"
    return "?" + t.__name__


def digest(code: str) -> str:
    """What travels on the channel and is compared: a short hash of a canonical code."""
    from _blake2 import blake2b

    return blake2b(code.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def recorder(fd: int) -> "tuple[Callable[..., None], Callable[..., None]]":
    """The `__tg_record__` and `__tg_pair__` the instrumented tests call, writing on `fd`.

    Each check's distinct outcomes are written once (at most 4 digests per check), so a test
    in a loop writes a few lines, not thousands."""
    from os import write

    seen: dict[int, set[object]] = {}

    def show(v: object, code: str) -> str:
        if code.startswith("?"):
            return f"<{type(v).__name__} object>"
        return (repr(v) if len(code) <= 400 else code)[:80].replace("\n", " ")

    def emit(line: str) -> None:
        write(fd, line.encode("utf-8", "backslashreplace"))

    def record(i: int, v: object, strict: int = 0) -> None:
        try:
            code = encode(v, strict)
        except BaseException:
            code = "?error"
        d = digest(code)
        s = seen.setdefault(i, set())
        if d not in s and len(s) < 4:
            s.add(d)
            emit(f"R {i:d} {d} {show(v, code)}\n")

    def pair(i: int, a: object, b: object) -> None:
        try:
            ca, cb = encode(a), encode(b)
        except BaseException:
            ca, cb = "?error", "?"
        same = ca == cb and not ca.startswith("?")
        s = seen.setdefault(i, set())
        if same not in s:
            s.add(same)
            emit(f"P {i:d} {same:d} {show(a, ca) if not same else ''}\n")
        if not same:
            raise AssertionError(f"{show(a, ca)} != {show(b, cb)}")

    return record, pair
