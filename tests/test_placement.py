"""Where each arm trains: the towers and GPUs a plan names, spread over the arms."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunegate.ladder.placement import Placement, placements
from tunegate.plan import ExecutorConfig


def test_each_tower_and_gpu_is_one_place_and_says_itself() -> None:
    executor = ExecutorConfig(
        kind="docker", host="ssh://a", hosts=["ssh://b"], devices=["0", "1"], image="img"
    )
    places = placements(executor, "docker")
    assert places == [
        Placement("ssh://a", "0"),
        Placement("ssh://a", "1"),
        Placement("ssh://b", "0"),
        Placement("ssh://b", "1"),
    ]
    assert executor.arms_at_once("docker") == 4
    run = places[3].executor(executor, "docker")
    assert (run.host, run.hosts, run.gpus) == ("ssh://b", [], "device=1")
    assert places[3].describe(run, "docker") == "ssh://b, docker img, GPU 1"
    # kind ssh gets its GPU from CUDA_VISIBLE_DEVICES, not --gpus.
    ssh = places[0].executor(executor, "ssh")
    assert ssh.gpus == "all"
    assert places[0].describe(ssh, "ssh") == "ssh://a, python3 over ssh, GPU 0"
    # A stage that trains here: one place, this machine.
    assert placements(executor, "local") == [Placement()]
    assert Placement().describe(executor, "local") == "this machine"
    assert placements(ExecutorConfig(kind="docker"), "docker") == [Placement()]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "docker", "hosts": ["ssh://b"]}, "hosts adds towers to host"),
        ({"kind": "docker", "host": "ssh://a", "hosts": ["b"]}, "'b' is not ssh://"),
        ({"kind": "docker", "host": "ssh://a", "hosts": ["ssh://a"]}, "named twice"),
        ({"kind": "local", "devices": ["0", "1"]}, "devices: needs kind docker or ssh"),
        ({"kind": "docker", "devices": ["0", "0"]}, "a GPU is named twice"),
    ],
)
def test_a_plan_that_names_towers_or_gpus_wrongly_is_refused(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ExecutorConfig.model_validate(fields)
