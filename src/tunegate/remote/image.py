"""The training image, built without a network: `tunegate image build`.

1. **The wheelhouse**: tunegate's own wheel, and every package it needs at exactly the version this
   environment runs (`pip freeze` as constraints), downloaded once while the registries are
   reachable (set-up time) and kept under the cache, keyed by those versions. The container then
   trains with the same transformers, peft, trl and bitsandbytes as the climb that judges it.
2. **The context**: the Dockerfile and the wheelhouse, and nothing else (no source tree, no run
   directory).
3. **The build**: `docker build --network=none`, here or on the tower, the context streamed to the
   tower's engine over the same ssh (`docker build -`), so nothing but ssh is needed between the
   machines and the engine never reaches a registry. BASE is any image with python3 and its venv
   module: a CUDA runtime for a GPU (its Python comes from the distribution's packages, the one
   step that needs the network), or a Debian image imported from a debootstrap tree.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tunegate.errors import UserError
from tunegate.remote.host import Host, HostUnreachable, RemoteFailed, quote

DEFAULT_BASE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
# What is not the project's to ship: the package tools themselves, and the project (its own wheel
# is built from the source).
_NOT_PINNED = ("pip", "setuptools", "wheel", "tunegate")


@dataclass(frozen=True)
class Built:
    tag: str
    where: str  # "this machine" or the host
    seconds: float
    wheels: int


def dockerfile() -> str:
    return (
        resources.files("tunegate") / "resources" / "docker" / "Dockerfile.training"
    ).read_text()


def _pip(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-2:])
        raise UserError(f"pip {args[0]} failed (exit {done.returncode}): {tail}")
    return done


def pinned_versions() -> list[str]:
    """`name==version` for every package this environment runs, less the packaging tools and
    the project itself (editable or not)."""
    frozen = _pip("freeze", "--all", timeout=120).stdout.splitlines()
    pins = []
    for line in frozen:
        name = line.split("==", 1)[0].split(" @ ", 1)[0].strip().lower()
        if "==" in line and not line.startswith(("-e", "#")) and name not in _NOT_PINNED:
            pins.append(line.strip())
    return sorted(pins)


def project_root() -> Path | None:
    """The source tree this tunegate runs from (an editable install), or None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def project_wheel(into: Path) -> Path:
    """tunegate's wheel, built from the source tree it runs from (the code the climb runs)."""
    source = project_root()
    if source is None:
        raise UserError(
            "tunegate image build needs tunegate's source tree (an editable install); this one "
            "is installed from a wheel"
        )
    into.mkdir(parents=True, exist_ok=True)
    _pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(into),
        str(source),
        timeout=600,
    )
    return next(into.glob("tunegate-*.whl"))


def _pins(overrides: Sequence[str]) -> list[str]:
    replaced = {o.split("==", 1)[0].strip().lower() for o in overrides}
    kept = [p for p in pinned_versions() if p.split("==", 1)[0].lower() not in replaced]
    return kept + list(overrides)


def wheelhouse_dir(cache: Path, overrides: Sequence[str] = ()) -> Path:
    """Where the wheelhouse for this environment's versions is (complete when it holds
    `.complete`)."""
    key = hashlib.sha256("\n".join(sorted(_pins(overrides))).encode()).hexdigest()[:12]
    return cache / f"wheelhouse-{key}"


def wheelhouse(
    cache: Path,
    project: Path,
    *,
    find_links: list[str],
    overrides: list[str],
    say: Callable[[str], None],
) -> Path:
    """The dependencies' wheels, pinned to this environment's versions (`overrides`, such as
    a CUDA build of torch, replace a pin). Downloaded once per set of versions: the directory's
    name is their hash."""
    pins = _pins(overrides)
    house = wheelhouse_dir(cache, overrides)
    if (house / ".complete").is_file():
        say(f"wheelhouse: {house} (made before, {len(list(house.glob('*.whl')))} wheels)")
        return house
    partial = house.with_name(house.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    constraints = partial / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    say(f"wheelhouse: the dependencies at this environment's versions ({len(pins)} pinned)")
    links = [arg for link in find_links for arg in ("--find-links", link)]
    _pip(
        "download",
        "-q",
        "--only-binary=:all:",
        "-d",
        str(partial),
        "-c",
        str(constraints),
        *links,
        str(project),
        timeout=3600,
    )
    for own in partial.glob("tunegate-*.whl"):  # the project's wheel is built for each image
        own.unlink()
    (partial / ".complete").write_text("\n".join(pins) + "\n")
    partial.rename(house)
    return house


def context(house: Path, project: Path, into: Path) -> Path:
    """The build context: the Dockerfile, the dependencies' wheels (linked, not copied) and the
    project's."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "Dockerfile").write_text(dockerfile())
    # Apart: the dependencies' layer stays cached while the project's wheel changes.
    for folder, wheels in (("wheelhouse", list(house.glob("*.whl"))), ("project", [project])):
        (into / folder).mkdir()
        for wheel in wheels:
            try:
                (into / folder / wheel.name).hardlink_to(wheel)
            except OSError:  # another filesystem
                shutil.copy2(wheel, into / folder / wheel.name)
    return into


def build(
    *,
    tag: str,
    base: str,
    host: Host | None,
    cache: Path,
    find_links: list[str],
    overrides: list[str],
    say: Callable[[str], None],
    house: Path | None = None,
    timeout: float = 3600,
) -> Built:
    """Make the wheelhouse (once; `house`: one made already), then build `tag` from BASE here or
    on `host`, offline."""
    if house is not None and not any(house.glob("*.whl")):
        raise UserError(f"--wheelhouse {house}: no wheels there (tunegate image wheelhouse)")
    with tempfile.TemporaryDirectory(prefix="tunegate-image-") as tmp:
        project = project_wheel(Path(tmp) / "project")
        if house is None:
            house = wheelhouse(cache, project, find_links=find_links, overrides=overrides, say=say)
        started = time.monotonic()
        ctx = context(house, project, Path(tmp) / "context")
        args = ["build", "--network=none", "--build-arg", f"BASE={base}", "-t", tag]
        if host is None:
            if shutil.which("docker") is None:
                raise UserError("no `docker` client here: install Docker, or build with --host")
            say(f"building {tag} from {base} on this machine")
            done = subprocess.run(
                ["docker", *args, str(ctx)], capture_output=True, text=True, timeout=timeout
            )
            if done.returncode != 0:
                raise UserError(f"docker build failed: {_tail(done.stdout + done.stderr)}")
        else:
            say(f"building {tag} from {base} on {host} (the context streamed over ssh)")
            out = _build_on(host, args, ctx, Path(tmp) / "build.log", timeout)
            if out.returncode == 255:
                raise HostUnreachable(f"{host}: {_tail(out.stdout, 1)}")
            if out.returncode != 0:
                raise RemoteFailed(
                    f"{host}: docker build failed: {_tail(out.stdout)}", out.returncode
                )
        wheels = len(list(house.glob("*.whl"))) + 1
    return Built(tag, str(host) if host else "this machine", time.monotonic() - started, wheels)


def _build_on(
    host: Host, args: list[str], ctx: Path, log: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`docker build -` on the host, the context tarred straight into ssh (no copy of it here)."""
    deadline = time.monotonic() + timeout
    with log.open("w+") as out:
        proc = subprocess.Popen(
            host.argv(f"docker {quote(*args)} -"),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdin is not None
        try:
            # GNU, not PAX: the engine takes a stream starting with a PAX header for a Dockerfile.
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                tar.add(ctx, arcname=".", recursive=True)
            proc.stdin.close()
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise HostUnreachable(f"{host}: docker build took over {timeout:g} s") from None
        except BrokenPipeError:  # ssh ended early: its status and output say why
            proc.wait(timeout=60)
        out.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), "")


def _tail(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"
