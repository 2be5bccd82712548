"""`tunegate doctor` (stage 0) against real failing environments: ports nobody listens on, stdlib
HTTP servers answering 500, an unroutable TEST-NET host, unwritable paths, a plan bigger than
the disk, a missing or unreachable docker. Nothing is mocked or patched."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import TUNEGATE

from tunegate import doctor
from tunegate.doctor import disk_need, run_checks
from tunegate.plan import (
    ExecutorConfig,
    HostConfig,
    JudgeConfig,
    ModelConfig,
    Plan,
    QuantizationConfig,
    TrackingConfig,
    load_plan,
)
from tunegate.state import Check
from tunegate.train.memory import shipped_models

UNROUTABLE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never routed, so a connect just times out
HAS_SSH = shutil.which("ssh") is not None
HAS_DOCKER = shutil.which("docker") is not None


def free_port() -> int:
    """A loopback port nobody listens on (the kernel's pick, released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def http_server(routes: dict[str, tuple[int, str]]) -> Iterator[str]:
    """A real HTTP server on loopback answering GET/POST `path` with (status, body); others 404.
    Yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)  # read the body first: answering early resets the client
            status, body = routes.get(self.path, (404, "not found"))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:  # keep pytest's output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never says a
    word: a hung sshd or server. Yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def gib_bytes(n: float) -> int:
    return int(n * 2**30)


def plan_with(example: Path, **update: Any) -> Plan:
    return load_plan(example).model_copy(update=update)


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


# --- tracking ---------------------------------------------------------------------------------
def test_tracking_server_down_fails_fast(example: Path) -> None:
    plan = plan_with(example, tracking=TrackingConfig(uri=f"http://127.0.0.1:{free_port()}"))
    check, seconds = timed(doctor._tracking, plan)
    assert check.status == "FAIL" and "connection refused" in check.value.lower()
    assert "mlflow server" in check.fix
    assert seconds < doctor.HTTP_TIMEOUT_S  # refused is immediate, no timeout spent


def test_tracking_server_up_passes_with_its_version(example: Path) -> None:
    with http_server({"/health": (200, "OK"), "/version": (200, "3.17.2")}) as url:
        check = doctor._tracking(plan_with(example, tracking=TrackingConfig(uri=url)))
    assert check.status == "PASS", check
    assert "MLflow 3.17.2" in check.value and url in check.value


def test_tracking_server_answering_500_fails_with_the_status(example: Path) -> None:
    with http_server({"/health": (500, "database locked"), "/version": (200, "3.17.2")}) as url:
        check = doctor._tracking(plan_with(example, tracking=TrackingConfig(uri=url)))
    assert check.status == "FAIL" and "HTTP 500" in check.value, check


def test_tracking_local_store_that_cannot_be_written_fails(example: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    check = doctor._tracking(plan_with(example, tracking=TrackingConfig(uri=uri)))
    assert check.status == "FAIL" and "is a file" in check.value, check


# --- disk ---------------------------------------------------------------------------------------
def test_unwritable_output_dir_fails(example: Path, tmp_path: Path) -> None:
    # We run as root, and root ignores mode bits: a chmod 0o500 directory is writable to it (so
    # os.access says yes too). Two places no one can write, root included: a path under a FILE
    # (mkdir gives ENOTDIR) and a path under /proc (procfs refuses new entries: ENOENT).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    under_file = doctor._disk(plan_with(example, output_dir=blocker / "runs"))
    assert under_file.status == "FAIL" and f"{blocker} is a file" in under_file.value
    under_proc = doctor._disk(plan_with(example, output_dir=Path("/proc/tunegate-doctor/runs")))
    assert under_proc.status == "FAIL" and "/proc is not writable" in under_proc.value
    assert "output_dir" in under_proc.fix
    if os.geteuid() != 0:  # as a normal user the mode bits do count
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        check = doctor._disk(plan_with(example, output_dir=locked / "runs"))
        assert check.status == "FAIL" and "not writable" in check.value


def test_disk_need_is_counted_from_the_lora_parameters(example: Path) -> None:
    plan = load_plan(example)  # tiny-llama, r = 16 on all 7 linear layers of 2 blocks
    lora = 2 * 16 * (4 * (128 + 128) + 2 * (128 + 256) + (256 + 128))
    assert lora == 69_632
    need = disk_need(plan)
    adapter = lora * 4 + doctor.MIB  # fp32 LoRA weights + tiny-llama's tokenizer allowance
    checkpoint = lora * (4 + 8) + doctor.MIB + doctor.CHECKPOINT_EXTRAS  # + AdamW's 2 moments
    assert (need.stages, need.arms) == (4, 2)
    assert need.parts["adapters"] == 8 * adapter
    # Two kept per stage and arm (micro's 10 steps / 5 save 3 times; the limit keeps 2), plus
    # one in flight while the oldest is rotated out.
    assert need.parts["checkpoints"] == 8 * 2 * checkpoint + checkpoint
    assert need.parts["merged models"] == 0
    assert need.total == sum(need.parts.values()) < gib_bytes(1)
    check = doctor._disk(plan)
    found = re.search(r"needs ~([\d.]+) GiB", check.value)
    assert check.status == "PASS" and found, check.value
    # + 4 MiB when this session has not built tiny-llama yet (its build lands on the same disk)
    assert float(found.group(1)) == pytest.approx(need.total / 2**30, abs=0.01)


def test_plan_bigger_than_the_disk_fails_with_both_figures(example: Path, tmp_path: Path) -> None:
    # No tmpfs to fill here: instead a plan that writes more than any disk of this machine holds.
    # Full fine-tuning of Llama-3-8B (config only: nothing is loaded) keeps 2 checkpoints of
    # weights + AdamW moments per stage and arm: 1.7 TiB in all.
    model = tmp_path / "llama3"
    model.mkdir()
    shutil.copy(shipped_models()["meta-llama/Meta-Llama-3-8B"], model / "config.json")
    plan = plan_with(
        example,
        model=ModelConfig(name=str(model)),
        quantization=QuantizationConfig(method="full"),
    )
    need = disk_need(plan)
    assert need.total > gib_bytes(1024)
    check = doctor._disk(plan)
    found = re.search(r"needs ~([\d.]+) GiB, ([\d.]+) GiB free at (\S+)", check.value)
    assert found, check.value
    assert float(found.group(1)) == pytest.approx(need.total / 2**30, abs=0.01)
    free = shutil.disk_usage(found.group(3)).free / 2**30
    assert float(found.group(2)) == pytest.approx(free, abs=1.0)  # other writers meanwhile
    assert (check.status == "FAIL") == (need.total > free * 2**30)  # FAIL here, 74 GiB free
    if check.status == "FAIL":
        assert "move output_dir" in check.fix and "largest part: checkpoints" in check.fix


# --- ssh ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_SSH, reason="no ssh client (the CLI test covers its WARN)")
def test_ssh_host_refusing_fails_with_sshs_message() -> None:
    port = free_port()
    check, seconds = timed(doctor._ssh, "gpu-tower", "nobody@127.0.0.1", port)
    assert check.name == "ssh gpu-tower" and check.status == "FAIL"
    assert f"port {port}: Connection refused" in check.value, check  # ssh's own line
    assert seconds < doctor.SSH_TIMEOUT_S


@pytest.mark.skipif(not HAS_SSH, reason="no ssh client (the CLI test covers its WARN)")
def test_ssh_host_that_never_answers_fails_within_the_timeout() -> None:
    with silent_listener() as port:
        check, seconds = timed(doctor._ssh, "gpu-tower", "nobody@127.0.0.1", port)
    assert check.status == "FAIL", check
    assert f"Connection to 127.0.0.1 port {port} timed out" in check.value  # ssh's own line
    assert doctor.SSH_CONNECT_TIMEOUT_S <= seconds < doctor.SSH_TIMEOUT_S


@pytest.mark.skipif(not HAS_SSH, reason="no ssh client (the CLI test covers its WARN)")
def test_ssh_to_test_net_fails_within_the_timeout() -> None:
    check, seconds = timed(doctor._ssh, "mlflow-server", f"nobody@{UNROUTABLE}", 22)
    assert check.status == "FAIL", check
    # What 192.0.2.1 gives depends on the network: "Connection timed out" after ConnectTimeout
    # where packets are dropped, "Network is unreachable" with no route, "Connection refused"
    # where a sandbox rejects outbound connections (this one). ssh's line is reported as is.
    assert f"ssh: connect to host {UNROUTABLE} port 22:" in check.value, check.value
    assert seconds < doctor.SSH_TIMEOUT_S + 1


# --- judge --------------------------------------------------------------------------------------
def judge(endpoint: str) -> JudgeConfig:
    return JudgeConfig(endpoint=endpoint, model="judge-7b", api_key_env=None)


def test_judge_answering_500_fails_with_the_status(example: Path) -> None:
    with http_server({"/v1/models": (500, "upstream crashed")}) as url:
        check = doctor._judge(plan_with(example, judge=judge(f"{url}/v1")))
    assert check.status == "FAIL" and "HTTP 500" in check.value, check


def test_judge_refusing_connections_fails(example: Path) -> None:
    check = doctor._judge(plan_with(example, judge=judge(f"http://127.0.0.1:{free_port()}/v1")))
    assert check.status == "FAIL" and "connection refused" in check.value, check


def test_judge_listing_its_model_passes(example: Path) -> None:
    models = json.dumps({"object": "list", "data": [{"id": "judge-7b"}, {"id": "other"}]})
    with http_server({"/v1/models": (200, models)}) as url:
        check = doctor._judge(plan_with(example, judge=judge(f"{url}/v1")))
        assert check.status == "PASS" and "serves judge-7b" in check.value, check
        wrong = plan_with(example, judge=judge(f"{url}/v1").model_copy(update={"model": "x"}))
        check = doctor._judge(wrong)
    assert check.status == "WARN" and "serves: judge-7b, other" in check.value, check


def test_judge_without_models_gets_one_token_call(example: Path) -> None:
    answer = json.dumps({"choices": [{"message": {"content": "p"}}], "usage": {}})
    with http_server({"/v1/chat/completions": (200, answer)}) as url:  # /v1/models: 404
        check = doctor._judge(plan_with(example, judge=judge(f"{url}/v1")))
    assert check.status == "PASS" and "1-token call" in check.value, check


def test_no_judge_configured_passes(example: Path) -> None:
    check = doctor._judge(load_plan(example))
    assert check == Check("judge", "PASS", "no judge configured (judge metrics report not run)")


# --- docker -------------------------------------------------------------------------------------
def test_docker_is_not_needed_by_the_local_executor(example: Path) -> None:
    [check] = doctor._docker(load_plan(example))
    assert check.status == "PASS" and check.value == "not needed (executor: local)"


def test_docker_executor_without_a_reachable_docker_fails(example: Path) -> None:
    # Whatever this machine has, the engine at a closed port is down; a stage-level executor
    # needs docker as much as the plan's.
    plan = load_plan(example)
    down = ExecutorConfig(kind="local", docker_host=f"tcp://127.0.0.1:{free_port()}")
    stages = [plan.stages[0], plan.stages[1].model_copy(update={"executor": "docker"})]
    checks = {c.name: c for c in doctor._docker(plan_with(example, executor=down, stages=stages))}
    if not HAS_DOCKER:
        assert checks["docker client"].status == "FAIL"
        assert "docker: not installed" in checks["docker client"].value
        return
    assert checks["docker client"].status == "PASS"
    daemon = checks["docker daemon"]
    assert daemon.status == "FAIL" and "Cannot connect to the Docker daemon" in daemon.value
    assert "docker image" not in checks  # not guessed at without a daemon


@contextmanager
def docker_engine(runtimes: list[str], images: list[str]) -> Iterator[str]:
    """A real, minimal Docker Engine API over TCP (stdlib HTTP): enough of /_ping, /version,
    /info and /images/NAME/json for the docker client the doctor runs. Yields the docker host."""

    class Engine(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the client keeps its connection open

        def _answer(self) -> None:
            path = re.sub(r"^/v[\d.]+", "", self.path.split("?")[0])  # API version prefix
            image = re.fullmatch(r"/images/(.+)/json", path)
            if path == "/_ping":
                status, body = 200, "OK"
            elif path == "/version":
                status, body = 200, json.dumps({"Version": "27.5.1", "ApiVersion": "1.47"})
            elif path == "/info":
                status, body = 200, json.dumps({"Runtimes": {r: {"path": r} for r in runtimes}})
            elif image and image.group(1) in images:
                ident = {"Id": "sha256:" + "ab" * 32, "Created": "2025-05-30T12:00:00Z"}
                status, body = 200, json.dumps(ident)
            else:
                status, body = 404, json.dumps({"message": f"No such image: {path}"})
            data = body.encode()
            self.send_response(status)
            self.send_header("Api-Version", "1.47")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not HAS_DOCKER, reason="needs the docker client (its absence: CLI test)")
def test_docker_engine_runtime_and_image_each_reported(example: Path) -> None:
    def checks(host: str) -> dict[str, Check]:
        executor = ExecutorConfig(kind="docker", docker_host=host)
        return {c.name: c for c in doctor._docker(plan_with(example, executor=executor))}

    with docker_engine(["nvidia", "runc"], ["tunegate-training"]) as host:
        ready = checks(host)
    assert [c.status for c in ready.values()] == ["PASS"] * 4, ready
    assert "Engine 27.5.1" in ready["docker daemon"].value
    assert "nvidia" in ready["docker gpu runtime"].value
    assert "tunegate-training sha256:abab" in ready["docker image"].value

    with docker_engine(["runc"], []) as host:
        bare = checks(host)
    assert bare["docker daemon"].status == "PASS"
    runtime, image = bare["docker gpu runtime"], bare["docker image"]
    assert runtime.status == "WARN" and "no nvidia runtime (runc)" in runtime.value
    assert "nvidia-ctk runtime configure" in runtime.fix
    assert image.status == "FAIL" and "No such image" in image.value
    assert image.fix == "tunegate image build --tag tunegate-training"


# --- all together -------------------------------------------------------------------------------
def test_everything_down_still_answers_within_seconds(example: Path) -> None:
    with silent_listener() as hung:
        plan = plan_with(
            example,
            tracking=TrackingConfig(uri=f"http://127.0.0.1:{free_port()}"),
            hosts=[
                HostConfig(name="gpu-tower", address="nobody@127.0.0.1", port=free_port()),
                HostConfig(name="mlflow-server", address=f"nobody@{UNROUTABLE}"),
                HostConfig(name="hung", address="nobody@127.0.0.1", port=hung),
            ],
            judge=judge(f"http://127.0.0.1:{free_port()}/v1"),
            executor=ExecutorConfig(kind="docker", docker_host=f"tcp://127.0.0.1:{free_port()}"),
        )
        checks, seconds = timed(run_checks, plan)
    by_name = {c.name: c for c in checks}
    down = ["tracking", "judge"] + (["docker daemon"] if HAS_DOCKER else ["docker client"])
    down += ["ssh gpu-tower", "ssh mlflow-server", "ssh hung"]
    expected = "FAIL" if HAS_SSH else "WARN"  # no ssh client: the hosts are not checked
    assert all(by_name[n].status == ("FAIL" if n[:3] != "ssh" else expected) for n in down), [
        by_name[n] for n in down
    ]
    # Every check answered by itself: none had to be cut off by run_checks' backstop.
    assert not [c for c in checks if c.value.startswith("no answer in")]
    # A bound on the timeouts, not a benchmark: measured 3.6 s here (the hung host's 3 s
    # ConnectTimeout, in parallel with everything else, on a loaded 2-core machine).
    assert seconds < 10, f"{seconds:.1f} s"


def test_cli_json_lists_every_check_and_exits_1_on_a_fail(example: Path, tmp_path: Path) -> None:
    # The plan edited as a user would, and a PATH without docker and ssh: the real "not
    # installed" on any machine (python, tunegate and its libraries are found by absolute path).
    text = example.read_text().replace("  uri: null", f"  uri: http://127.0.0.1:{free_port()}")
    text += (
        "\nexecutor: {kind: docker}\n"
        f"hosts:\n  - {{name: gpu-tower, address: nobody@127.0.0.1, port: {free_port()}}}\n"
    )
    example.write_text(text)
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = subprocess.run(
        [TUNEGATE, "doctor", str(example), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(bare)},
    )
    assert proc.returncode == 1, proc.stderr
    body = json.loads(proc.stdout)
    assert 0 < body["total_seconds"] < 10
    checks = {c["name"]: c for c in body["checks"]}
    assert set(checks) >= {
        "python",
        "packages",
        "torch device",
        "bitsandbytes",
        "model",
        "gpu memory",
        "free disk",
        "tracking",
        "judge",
        "docker client",
        "ssh gpu-tower",
        "sandbox",
    }
    assert all(set(c) == {"name", "status", "value", "fix", "seconds"} for c in body["checks"])
    assert checks["tracking"]["status"] == "FAIL"
    docker = checks["docker client"]
    assert docker["status"] == "FAIL" and "docker: not installed" in docker["value"]
    ssh = checks["ssh gpu-tower"]
    assert ssh["status"] == "WARN" and "ssh: not installed" in ssh["value"]
    assert "openssh-client" in ssh["fix"]


def test_a_slow_import_here_is_not_cut_off_like_a_hung_host(example: Path) -> None:
    """Checks of this machine alone get their own, longer bound: a cold torch + bitsandbytes
    import on a GPU host outlasted the hosts' 8 s (an H200, docs/benchmarks.md). A hung host is
    still cut off at the short bound."""
    with silent_listener() as hung:
        plan = plan_with(example, tracking=TrackingConfig(uri=f"http://127.0.0.1:{hung}"))
        checks = run_checks(plan, 0.2, 60.0)
    by_name = {c.name: c for c in checks}
    assert by_name["tracking"].value == "no answer in 0.2 s"
    for local in ("python", "packages", "torch device", "bitsandbytes", "gpu memory"):
        assert not by_name[local].value.startswith("no answer"), by_name[local]


def test_runtimes_for_the_datas_languages_fail_when_node_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The five-scenario example holds JavaScript and SQL items, and its plan executes them.
    from tunegate.data.scenarios import write_example

    plan_path, _, _ = write_example(tmp_path / "five")
    plan = load_plan(plan_path)
    found = {c.name: c for c in run_checks(plan) if c.name.startswith("runtime ")}
    assert set(found) == {"runtime javascript", "runtime sql"}
    assert found["runtime javascript"].status == ("PASS" if shutil.which("node") else "FAIL")
    assert found["runtime sql"].status == "PASS" and "SQLite 3." in str(found["runtime sql"].value)

    # A PATH without node: the real "not installed". The JavaScript items could not be judged,
    # so the climb must stop at stage 0, not score them 0 after hours of training.
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    node = next(c for c in run_checks(plan) if c.name == "runtime javascript")
    assert node.status == "FAIL"
    assert "node not found on PATH: 240 javascript items cannot be executed" in str(node.value)
    assert node.fix is not None and "Node.js" in node.fix
