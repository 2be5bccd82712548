"""The run's state: what `state.json` holds, typed, versioned and validated.

`state.json` is the record a user decides from and the point a climb resumes at, so it has one
schema, written down here, and every reader (ladder, report, render, pre-flight, forecast,
status) takes these objects rather than dicts. The file carries its schema's name; a file from
before the name existed (`tunegate.state/1`, the same shape without it) is migrated on load, and
one this version cannot read is refused with one line saying what to do.

Producers live elsewhere and import their record types from here (the forecast's `Actual` and
`Forecast`, the pre-flight's `Box`, the doctor's `Check`), so that this module sits below
everything that fills it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from tunegate.determinism import MachineRecord
from tunegate.gates import GateResult
from tunegate.stats import Comparison, SeededDifference
from tunegate.train.qlora import TrainResult

STATE_SCHEMA: Final = "tunegate.state/2"
READABLE_STATE_SCHEMAS = ("tunegate.state/1", STATE_SCHEMA)

Verdict = Literal["PASS", "INVESTIGATE", "FAIL"]


def _machine(value: Any) -> Any:
    # Read tolerantly: a record from a container or another tunegate version may lack fields.
    # As a dict, so that the fields it has are then checked as any other field is (the report
    # joins cpu_flags and formats every field: a null there would crash it).
    return MachineRecord.from_json(value).to_json() if isinstance(value, dict) else value


_MACHINE: Final = TypeAdapter(MachineRecord)


Machine = Annotated[
    MachineRecord,
    BeforeValidator(_machine),
    PlainSerializer(lambda m: m.to_json(), return_type=dict),
]


@dataclass(frozen=True)
class Actual:
    """What a finished training stage took (the forecast's measurement)."""

    stage: str
    wall_hours: float
    device_hours: float
    device: str
    samples_trained: int
    tokens_trained: int
    tokens_per_second: float | None
    judge_calls: int
    judge_usd: float
    usd: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Forecast:
    """A stage's time and cost, predicted from the stages measured before it."""

    stage: str
    hours: float
    low_hours: float
    high_hours: float
    usd: float
    low_usd: float
    high_usd: float
    samples: int
    basis: str  # which measurements it rests on
    estimate_hours: float
    estimate_usd: float
    same_batch: bool = True  # measured at the target's batch size; else a bracket

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Check:
    """One environment check of `tunegate doctor` and the environment stage."""

    name: str
    status: Literal["PASS", "WARN", "FAIL"]
    value: str
    fix: str = ""
    seconds: float = 0.0  # wall time of the check (shared by checks measured together)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Box:
    """One box of the pre-flight checklist, ticked from recorded evidence."""

    label: str
    ticked: bool
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Record(BaseModel):
    # Unknown keys are an error, not silently dropped: a typo in a writer must fail its tests.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FileEntry(_Record):
    """One file an arm left (`tunegate.artifacts`): what proves it is still the same."""

    size: int
    sha256: str


class GenerationRecord(_Record):
    """What one arm's generation took in a stage (the smoke answer and the test answers): the
    forecast of a later stage's generation time rests on it."""

    seconds: float
    row_steps: int  # Σ sequences × max_new_tokens: the work if no row ran alongside another
    batch_steps: int  # Σ batches × max_new_tokens: the work if a batch cost one row


class ArmRecord(_Record):
    status: Literal["pending", "training", "done", "failed"] = "pending"
    mlflow_run: str | None = None
    train: TrainResult | None = None  # set once the adapter is complete
    error: str | None = None  # why training failed
    # Where it trained: "this machine", or the tower and how ("ssh://tower, docker
    # tunegate-training, GPU 1"); the report and MLflow show it beside its numbers.
    trained_on: str | None = None
    # A stage with several seeds keys each training run as "<arm>.seed<seed>": its arm and seed.
    arm: str | None = None
    seed: int | None = None
    # Its adapter's (and merged model's) files, by path inside the arm's directory: reuse and
    # "passed" both check them (`tunegate.artifacts`).
    manifest: dict[str, FileEntry] = Field(default_factory=dict)
    generation: GenerationRecord | None = None

    @field_validator("train")
    @classmethod
    def _machine_checked(cls, train: TrainResult | None) -> TrainResult | None:
        # TrainResult keeps its machine as a plain dict; it is read back as a MachineRecord.
        if train is not None and train.machine:
            try:
                _MACHINE.validate_python(_machine(train.machine))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"machine.{where}: {first['msg']}") from None
        return train


class EvaluationCost(_Record):
    """What a stage's evaluation paid, and what the original plan's per-call pricing would have."""

    seed_calls: int
    seed_usd: float
    judge_calls: int = 0
    judge_cache_hits: int = 0
    judge_usd: float = 0.0
    judge_failures: int | None = None
    judge_prompt_tokens: int | None = None
    judge_completion_tokens: int | None = None


class ComparisonRecord(_Record):
    """A stage's paired analysis, as `comparison.json` holds it."""

    primary: Comparison
    secondary: dict[str, Comparison] = Field(default_factory=dict)
    per_scenario: dict[str, Comparison] = Field(default_factory=dict)
    clustered: dict[str, Any] | None = None  # pooled primary with cluster-robust SE
    seeds: SeededDifference | None = None  # the primary over several seeds per arm
    excluded: dict[str, int] = Field(default_factory=dict)  # metric → pairs left out
    no_value: dict[str, str] = Field(default_factory=dict)  # metric → why it has no value
    n_for_observed_effect: int | None = None  # paired items the observed d_z needs


class StageRecord(_Record):
    index: int
    hash: str  # of everything the stage's result depends on (`Plan.stage_hash`)
    status: Literal["running", "done"] | None = None
    started: str | None = None
    finished: str | None = None
    forced: bool = False
    forced_reason: str | None = None
    verdict: Verdict | None = None
    seconds: float | None = None
    gates: list[GateResult] = Field(default_factory=list)
    mlflow_run: str | None = None
    arms: dict[str, ArmRecord] = Field(default_factory=dict)
    # How many of its arms trained at the same time (two towers or two GPUs: 2); each held its
    # device for the stage's whole wall time.
    arms_at_once: int = 1
    checks: list[Check] | None = None  # the environment stage's
    evaluation_cost: EvaluationCost | None = None
    comparison: ComparisonRecord | None = None
    actual: Actual | None = None

    def gate(self, name: str) -> GateResult | None:
        return next((g for g in self.gates if g.name == name), None)

    @property
    def trains(self) -> list[TrainResult]:
        """The arms' training results, in arm order, for those that trained."""
        return [a.train for a in self.arms.values() if a.train is not None]


class LadderState(_Record):
    schema_: Literal["tunegate.state/2"] = Field(STATE_SCHEMA, alias="schema")
    plan_name: str | None = None
    created: str | None = None
    plan_hash: str | None = None
    data_hashes: dict[str, str] = Field(default_factory=dict)  # arm → its whole data set's
    machine: Machine | None = None  # the machine that began the climb (each arm has its own)
    tracking_uri: str | None = None  # passwords redacted: state.json is shared
    mlflow_experiment_id: str | None = None
    mlflow_parent: str | None = None
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    # Per measuring stage, the forecast it made of each stage ahead.
    forecasts: dict[str, dict[str, Forecast]] = Field(default_factory=dict)
    preflight: list[Box] | None = None

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    def stage(self, name: str) -> StageRecord | None:
        return self.stages.get(name)

    def verdict(self, name: str) -> Verdict | None:
        record = self.stages.get(name)
        return record.verdict if record else None

    def spent(self) -> tuple[float, float]:
        """(hours, dollars) the measured stages took."""
        done = [r.actual for r in self.stages.values() if r.actual is not None]
        return sum(a.wall_hours for a in done), sum(a.usd for a in done)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class StateError(ValueError):
    """A state file this version cannot read; the message is one line."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A state dict of any readable schema, in the current one."""
    schema = data.get("schema", "tunegate.state/1")
    if schema not in READABLE_STATE_SCHEMAS:
        readable = ", ".join(READABLE_STATE_SCHEMAS)
        if isinstance(schema, str) and schema.startswith("tunegate.state/"):
            raise StateError(
                f"schema {schema!r} is from a newer tunegate (this one reads {readable}): "
                "upgrade tunegate"
            )
        raise StateError(f"schema {schema!r} is no tunegate state's (this one reads {readable})")
    if schema == "tunegate.state/1":
        data = {**data, "schema": STATE_SCHEMA}
        # Only what is well formed is rewritten; validation then names what is not.
        for record in _dicts(data.get("stages")):
            comparison = record.get("comparison")
            if isinstance(comparison, dict) and "not_run" in comparison:
                comparison["no_value"] = comparison.pop("not_run")  # renamed with 'not applicable'
            for arm in _dicts(record.get("arms")):
                if isinstance(arm.get("train"), dict):
                    arm["train"].pop("tokens_per_second", None)  # derived, not stored
    return data


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict values of `value` that are dicts themselves."""
    if not isinstance(value, dict):
        return []
    return [v for v in value.values() if isinstance(v, dict)]


def parse_state(data: Any) -> LadderState:
    """Validate (and migrate) a decoded `state.json`; StateError names the first bad field."""
    if not isinstance(data, dict):
        raise StateError("not a JSON object")
    try:
        return LadderState.model_validate(migrate(data))
    except ValidationError as err:
        first = err.errors()[0]
        # repr for a key with a newline or a control character: the message stays one line.
        where = ".".join(
            str(part) if str(part).isprintable() else repr(part) for part in first["loc"]
        )
        message = f"{where}: {first['msg']} (written by an incompatible tunegate?)"
        raise StateError(message) from None
