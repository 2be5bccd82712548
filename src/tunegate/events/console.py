"""The console sink: what a person watching `tunegate run` reads, in Rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from tunegate.events import (
    ArmFailed,
    ArmReused,
    ArmTrained,
    ClimbOpened,
    Compared,
    DataChecked,
    EnvironmentChecked,
    Event,
    GateDecided,
    Notice,
    PreflightChecked,
    SmokeGenerated,
    StageMeasured,
    StageStarted,
    TrainingStarted,
)
from tunegate.render import comparison_line, duration, seeds_line

_LEVEL = {"info": "", "warning": "yellow", "error": "red", "success": "green"}
_STATUS = {"PASS": "green", "WARN": "yellow", "FAIL": "red"}
_VERDICT = {"PASS": "green", "INVESTIGATE": "yellow", "FAIL": "red"}


class ConsoleSink:
    def __init__(self, console: Console) -> None:
        self.console = console

    def _say(self, text: str) -> None:
        self.console.print(text)

    def emit(self, event: Event) -> None:
        match event:
            case Notice(text=text, level=level, headline=headline):
                color = _LEVEL[level]
                head = f"{escape(headline)} " if headline else ""
                if headline and color:
                    head = f"[{color}]{escape(headline)}[/] "
                self._say(head + escape(text))
            case ClimbOpened(machine=machine):
                # One line, however long (a log is grepped for it): the terminal wraps it.
                self.console.print(f"[dim]Machine: {escape(machine.summary())}[/]", soft_wrap=True)
            case StageStarted():
                self._say(f"\n[bold]Stage {event.index} · {event.stage}[/] — {event.description}")
            case EnvironmentChecked(checks=checks):
                for c in checks:
                    fix = f" — {c.fix}" if c.fix and c.status != "PASS" else ""
                    color = _STATUS[c.status]
                    self._say(f"  [{color}]{c.status:<4}[/] {c.name}: {escape(str(c.value) + fix)}")
            case DataChecked():
                color = "red" if event.verdict == "fail" else "yellow"
                self._say(
                    f"  [{color}]{event.verdict.upper()}[/] {event.arm} {event.name}: "
                    f"{event.summary}"
                )
                for message in event.messages[:5]:
                    self._say(f"      {escape(message)}")
            case ArmReused(arm=arm, adapter=adapter):
                self._say(f"  {arm}: trained adapter recorded at {adapter} — not re-training")
            case TrainingStarted():
                self._training_started(event)
            case ArmTrained(arm=arm, result=r):
                first, last = r.losses[0][1], r.losses[-1][1]
                self._say(
                    f"  {arm}: {r.steps} steps in {r.seconds:.1f} s, loss "
                    f"{first:.3f} → {last:.3f}, {r.linear4bit_layers} Linear4bit layers"
                )
            case ArmFailed(arm=arm, error=error):
                self._say(f"  [red]{arm}: training failed:[/] {escape(error)}")
            case SmokeGenerated(arm=arm, text=text):
                self._say(f"  {arm}: smoke generation {escape(repr(text.strip()[:60]))}")
            case Compared():
                self._compared(event)
            case GateDecided():
                self._gate_decided(event)
            case StageMeasured():
                self._measured(event)
            case PreflightChecked():
                self._say(
                    f"\n[bold]Pre-flight checklist[/] (before stage {event.index}, {event.stage}):"
                )
                for b in event.boxes:
                    mark = "[green]✓[/]" if b.ticked else "[red]✗[/]"
                    self._say(f"  {mark} {escape(b.label)} — {escape(b.evidence)}")
            case _:
                pass  # tracking's business (runs opened, steps, means, the report logged)

    def _training_started(self, event: TrainingStarted) -> None:
        self._say(
            f"  {event.arm}: training on {event.items} items"
            + (" (resuming from its last checkpoint)" if event.resuming else "")
        )

    def _compared(self, event: Compared) -> None:
        p = event.primary
        if event.n_for_observed_effect is not None and p.d_z is not None:
            self._say(
                f"  power: detecting the observed d_z = {p.d_z:.2f} with 80% power needs "
                f"{event.n_for_observed_effect} paired test items (this stage had {p.n})"
            )
        self._say(
            escape(
                f"  {comparison_line(p, event.no_value.get(p.metric))}, {p.test}, "
                f"p = {p.p_value if p.p_value is None else f'{p.p_value:.4g}'}"
                + (f", d_z = {p.d_z:.2f}" if p.d_z is not None else "")
            )
        )
        if event.seeds is not None:
            self._say(f"  {escape(seeds_line(event.seeds))}")
        for m, c in event.secondary.items():
            self._say(f"  {escape(comparison_line(c, event.no_value.get(m)))}")

    def _gate_decided(self, event: GateDecided) -> None:
        for g in event.gates:
            mark = "[green]✓[/]" if g.passed else "[red]✗[/]"
            self._say(f"  {mark} {g.name}: {escape(g.evidence)}")
        color = _VERDICT[event.verdict]
        self._say(f"  → [bold {color}]{event.verdict}[/]" + (" (forced)" if event.forced else ""))
        if event.verdict != "PASS" and event.recovery:
            self._say("  Recovery (from the plan):")
            for step, action in enumerate(event.recovery, 1):
                self._say(f"    {step}. {escape(action)}")

    def _measured(self, event: StageMeasured) -> None:
        for i, f in event.forecasts.items():
            self._say(
                f"  forecast stage {i} ({f.stage}): {duration(f.hours)} "
                f"({duration(f.low_hours)}–{duration(f.high_hours)}), ${f.usd:,.2f}; "
                f"plan estimate {duration(f.estimate_hours)}, ${f.estimate_usd:,.2f} "
                f"[{f.basis}]"
            )
