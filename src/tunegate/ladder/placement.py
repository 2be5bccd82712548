"""Where each arm of a stage trains: this machine, or a tower and a GPU there.

A plan that names two towers (`executor.host` + `executor.hosts`) or two GPUs (`executor.devices`)
has two places, and its arms train at the same time, one in each. The arms are spread in a fixed
order (run k in place k mod n), so a resumed climb finds each arm where it left it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunegate.plan import ExecutorConfig


@dataclass(frozen=True)
class Placement:
    """One place an arm trains: a tower (None: this machine) and a GPU of it (None: every arm
    gets the executor's `gpus`)."""

    host: str | None = None
    device: str | None = None

    def executor(self, executor: ExecutorConfig, kind: str) -> ExecutorConfig:
        """The executor as this place runs it: its kind, its tower, its GPU."""
        update: dict[str, object] = {"kind": kind, "host": self.host, "hosts": []}
        if self.device is not None and kind == "docker":
            update["gpus"] = f"device={self.device}"
        return executor.model_copy(update=update)

    def describe(self, executor: ExecutorConfig, kind: str) -> str:
        """Where an arm trained, as the report and MLflow say it."""
        where = self.host or "this machine"
        how = {"docker": f"docker {executor.image}", "ssh": f"{executor.python} over ssh"}
        parts = [where, how[kind]] if kind in how else [where]
        if self.device is not None:
            parts.append(f"GPU {self.device}")
        return ", ".join(parts)


def placements(executor: ExecutorConfig, kind: str) -> list[Placement]:
    """Every place a stage's arms can train at the same time with `kind`."""
    if kind == "local":
        return [Placement()]
    hosts: list[str | None] = [*executor.towers()] or [None]
    devices: list[str | None] = [*executor.devices] or [None]
    return [Placement(host, device) for host in hosts for device in devices]
