"""The same numbers twice on one machine, and a record of what made them on this one.

`pin()` fixes what a process may otherwise choose by itself: torch's intra-op thread count (a
sum split over another number of threads adds in another order), torch's deterministic
algorithms (warn-only where an op has none, as on some CUDA kernels), and bitsandbytes' CPU path.
On a CPU with AVX-512 BF16 (Intel Xeon since Cooper Lake, AMD Zen 4), bitsandbytes repacks a
4-bit layer's weights for a bf16 kernel the first time the layer runs in eval mode without
gradients, and every later call, training included, uses that kernel; on other CPUs it never
does. So whether a validation pass ran before training, and which CPU ran it, changed the
numbers. tunegate keeps every 4-bit layer on the one fp32 dequantize-and-matmul path everywhere.

`machine_record()` says which CPU, which of torch's CPU kernels (ATen's dispatch capability),
which BLAS and which oneDNN ISA ran, and the thread count: what explains a difference between
two machines. The same seeded run on an AMD EPYC and an Intel Xeon with AMX still differs in the
last digits (their BLAS kernels differ); the example is built so that its verdicts do not.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# CPU features that change which kernels torch, oneDNN, MKL and bitsandbytes pick.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
# Environment variables that cap or steer those choices, recorded as set.
KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


@dataclass(frozen=True)
class MachineRecord:
    """What made a run's numbers: enough to explain why two machines differ."""

    cpu: str  # model name
    cpu_flags: list[str]  # of KERNEL_FLAGS, those this CPU has
    torch: str
    torch_cpu_capability: (
        str  # ATen's dispatch: DEFAULT, AVX2, AVX512 (ATEN_CPU_CAPABILITY caps it)
    )
    blas: str  # e.g. "oneMKL 2024.0 Update 2" or "OpenBLAS"
    onednn: str  # version and the ISA it dispatches to
    threads: int  # torch intra-op threads
    deterministic: bool  # torch.use_deterministic_algorithms, the one bitsandbytes path
    env: dict[str, str] = field(default_factory=dict)  # KERNEL_ENV as set
    cuda: str | None = None  # device, compute capability, CUDA and cuDNN versions

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineRecord:
        """A record read back (from a container's result, another tunegate version): fields it
        lacks read as unknown, fields this version does not know are left out."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {"cpu_flags": [], "threads": 0, "deterministic": False}
        values.update({k: v for k, v in data.items() if k in known})
        for name in known:
            values.setdefault(name, "unknown")
        return cls(**values)

    def params(self) -> dict[str, str]:
        """Flat `machine.*` entries for MLflow params and a report table."""
        out = {
            "machine.cpu": self.cpu,
            "machine.cpu_flags": " ".join(self.cpu_flags) or "none of " + " ".join(KERNEL_FLAGS),
            "machine.torch_cpu_capability": self.torch_cpu_capability,
            "machine.blas": self.blas,
            "machine.onednn": self.onednn,
            "machine.threads": str(self.threads),
            "machine.deterministic": str(self.deterministic).lower(),
        }
        out.update({f"machine.env.{k}": v for k, v in self.env.items()})
        if self.cuda:
            out["machine.cuda"] = self.cuda
        return out

    def summary(self) -> str:
        """One line: CPU, kernels, threads."""
        return (
            f"{self.cpu} ({self.torch_cpu_capability} kernels"
            + "".join(f", {k}={v}" for k, v in self.env.items() if "THREADS" not in k)
            + f"), {self.blas}, {self.onednn}, {self.threads} threads"
            + (f", {self.cuda}" if self.cuda else "")
        )


def pin(threads: int | None = None, *, deterministic: bool = True) -> int:
    """Fix this process's thread count (given, else torch's default here, i.e. the physical
    cores) and, when `deterministic`, torch's deterministic algorithms and bitsandbytes' one
    CPU path. Returns the thread count."""
    import torch

    count = threads or _default_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if deterministic:
        # cuBLAS reads this once, at its first use: set it before any CUDA work.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every torch.empty with NaN, a debugging aid against
        # kernels that read memory they never wrote. It changes no result of a correct kernel
        # and made the example's training 1.4× slower on a 2-core CPU.
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return count


@functools.cache
def _default_threads() -> int:
    """torch's own choice for this machine, read once, before anything changes it."""
    import torch

    return torch.get_num_threads()


def one_cpu_path(model: Any) -> int:
    """Keep every bitsandbytes 4-bit layer of `model` on the fp32 dequantize-and-matmul path
    (see the module docstring), when `pin` asked for determinism. Returns the layers changed."""
    import torch

    if not torch.are_deterministic_algorithms_enabled():
        return 0
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def machine_record() -> MachineRecord:
    """This process's record (after `pin`)."""
    import torch

    return MachineRecord(
        cpu=_cpu_model(),
        cpu_flags=[f for f in KERNEL_FLAGS if f in _cpu_flags()],
        torch=torch.__version__,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        blas=_libraries()[0],
        onednn=_libraries()[1],
        threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        env={k: os.environ[k] for k in KERNEL_ENV if os.environ.get(k)},
        cuda=_cuda(),
    )


@functools.cache
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read(1 << 16)  # the first processor's block is enough
    except OSError:
        return ""


def _cpu_model() -> str:
    found = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def _cpu_flags() -> set[str]:
    found = re.search(r"^flags\s*:\s*(.+)$", _cpuinfo(), re.M)
    return set(found.group(1).split()) if found else set()


@functools.cache
def _libraries() -> tuple[str, str]:
    """(BLAS, oneDNN) as they announce themselves when they run: MKL's and oneDNN's verbose
    modes print their version and, for oneDNN, the ISA it dispatches to (after any cap)."""
    import torch

    config = torch.__config__.show()
    blas_info = re.search(r"BLAS_INFO=(\w+)", config)
    blas = "BLAS " + (blas_info.group(1) if blas_info else "")
    onednn = "oneDNN not built" if not torch.backends.mkldnn.is_available() else "oneDNN"
    a = torch.ones(8, 8)
    if torch.backends.mkl.is_available():
        blas = _mkl_version(a) or blas
    if torch.backends.mkldnn.is_available():
        with _stdout_captured() as read, torch.backends.mkldnn.verbose(1):
            a.to_mkldnn()  # a oneDNN reorder: its first primitive prints the header
        text = read()
        version = re.search(r"info,(oneDNN v[\d.]+)", text)
        isa = re.search(r"info,cpu,isa:([^\n]+)", text)
        if version:
            onednn = version.group(1) + (f" ({isa.group(1).strip()})" if isa else "")
    return blas, onednn


def _mkl_version(a: Any) -> str | None:
    """MKL's version as its verbose mode prints it. Its first verbose call calibrates MKL's
    timer (0.3-0.8 s, every process that records the machine), so the answer is kept in
    tunegate's cache per torch build: the version is the build's, whatever the CPU."""
    import torch

    from tunegate.models.tiny import cache_dir

    build = Path(torch.__file__).parent / "lib"
    try:
        stamp = max((f.stat().st_mtime_ns, f.stat().st_size) for f in build.glob("libtorch_cpu*"))
    except (OSError, ValueError):
        stamp = (0, 0)
    key = hashlib.sha256(f"{torch.__version__}|{build}|{stamp}".encode()).hexdigest()[:16]
    cached = cache_dir() / "machine" / f"mkl-{key}.txt"
    with contextlib.suppress(OSError):
        return cached.read_text(encoding="utf-8").strip() or None
    with _stdout_captured() as read, torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
        torch.mm(a, a)
    found = re.search(r"MKL_VERBOSE (oneMKL [^,]*?|Intel\(R\) MKL [^,]*?) (Product|for)", read())
    version = found.group(1).strip() if found else None
    if version:
        with contextlib.suppress(OSError):  # a read-only cache only costs the next process time
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(version, encoding="utf-8")
            os.replace(tmp, cached)
    return version


@contextlib.contextmanager
def _stdout_captured() -> Iterator[Any]:
    """What native code writes to file descriptor 1 inside the block (Python's sys.stdout
    untouched); `read()` after the block returns it."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        text: list[str] = []
        os.dup2(sink.fileno(), 1)
        try:
            yield lambda: "".join(text)
        finally:
            with contextlib.suppress(Exception):
                import ctypes

                ctypes.CDLL(None).fflush(None)  # C stdio buffers, before fd 1 goes back
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode(errors="replace"))


def _cuda() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    cudnn = torch.backends.cudnn.version()
    return f"{torch.cuda.get_device_name(0)} (sm_{major}{minor}), CUDA {torch.version.cuda}" + (
        f", cuDNN {cudnn}" if cudnn else ""
    )
