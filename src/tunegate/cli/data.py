"""`tunegate data …`: check, derive and inspect the arms' data. Parse, call, print.

Registered on the main app as `app.add_typer(data_app, name="data")`. transformers and TRL are
imported only by the tokenizer workers (`check`, `check-file`) and inside `preview`, so
`tunegate data --help` stays fast.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import typer
from rich.table import Table
from rich.text import Text

from tunegate.cli.common import DEFAULT_PLAN, EXIT_FAILED, console, refuse_overwrite
from tunegate.data.checks import (
    LEAKAGE_NGRAM,
    LEAKAGE_THRESHOLD,
    CheckReport,
    CheckResult,
    ShingleCache,
    TokenWorker,
    duplicates,
    label_mask_preview,
    leakage,
    pairing,
    prompt_boundary,
    quiet_libraries,
    token_lengths,
)
from tunegate.data.scenarios import write_example
from tunegate.errors import UserError
from tunegate.models import resolve_model
from tunegate.plan import DataChecks, Plan, load_plan
from tunegate.prompts import PromptFormat

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunegate.data.arms import Experiment
    from tunegate.data.items import Item

data_app = typer.Typer(
    no_args_is_help=True,
    help="Check, derive and inspect the arms' data: pairing, leakage, token lengths, EOS, "
    "label masks.",
)
SHOWN_MESSAGES = 5  # per check in the table; --json lists every one
_VERDICT_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def _tokenizer(path: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    quiet_libraries()
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UserError(f"model.name: cannot load a tokenizer from {path}: {err}") from None


def _threshold_option() -> Any:
    return typer.Option(
        LEAKAGE_THRESHOLD,
        "--threshold",
        min=0.01,
        max=1.0,
        help=f"Near-duplicate threshold: Jaccard similarity of token {LEAKAGE_NGRAM}-grams.",
    )


# --- output ---------------------------------------------------------------------------------


def _details(check: CheckResult) -> Text:
    text = Text(check.summary)
    for message in check.messages[:SHOWN_MESSAGES]:
        text.append("\n  " + message)
    more = len(check.messages) - SHOWN_MESSAGES
    if more > 0:
        text.append(f"\n  ... and {more} more (--json lists every one)", style="dim")
    return text


def _print_report(report: CheckReport, title: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    table = Table(title=title, show_lines=True)
    table.add_column("scope")
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("details", overflow="fold")
    for check in report.checks:
        table.add_row(
            Text(check.scope),
            Text(check.name),
            Text(check.verdict.upper(), style=_VERDICT_STYLE[check.verdict]),
            _details(check),
        )
    console.print(table)
    fails = sum(c.verdict == "fail" for c in report.checks)
    warns = sum(c.verdict == "warn" for c in report.checks)
    console.print(
        Text(
            f"{report.verdict.upper()}: {len(report.checks)} checks, {fails} failed, "
            f"{warns} warning(s)",
            style="bold " + _VERDICT_STYLE[report.verdict],
        )
    )


# --- check ----------------------------------------------------------------------------------


def _check_plan(
    report: CheckReport,
    plan: Plan,
    exp: Experiment,
    worker: TokenWorker,
    threshold: float | None,
) -> None:
    """Per arm: prompt boundaries and EOS; per training stage and arm: the token lengths of what
    it trains on (train + val) and leakage of its test items into its training items, under the
    stage's `checks:` policy, as the ladder applies it before training."""
    from tunegate.data.micro import micro_items

    roles = ("control", "experiment")
    arms = {role: list(exp.arm(role).values()) for role in roles}
    builtin = {i.id: i for i in micro_items()}
    worker.submit([arms["control"], arms["experiment"], list(builtin.values())])
    # Meanwhile, what needs no tokenizer: selections and leakage.
    stages, leaks = _stage_selections(plan, exp, builtin, threshold)
    (control_codes, control_eos), (experiment_codes, experiment_eos), (builtin_codes, _) = (
        worker.result()
    )
    codes = {
        "control": {e.id: e for e in control_codes},
        "experiment": {e.id: e for e in experiment_codes},
        "builtin": {e.id: e for e in builtin_codes},
    }
    for arm_role, eos, arm_codes in (
        ("control", control_eos, control_codes),
        ("experiment", experiment_eos, experiment_codes),
    ):
        report.add(prompt_boundary(arm_codes), scope=plan.arm_name(arm_role))
        report.add(eos, scope=plan.arm_name(arm_role))
    for scope, trained, items, source, policy in stages:
        lengths = token_lengths(
            [items[i] for i in trained],
            None,
            plan.model.max_length,
            on_truncation=policy.truncation,
            encoded=[codes[source][i] for i in trained],
        )
        report.add(lengths, scope=scope)
        if scope in leaks:
            report.add(leaks[scope], scope=scope)


class _TrainedSelection(NamedTuple):
    """What one arm trains on in one training stage."""

    scope: str  # "index stage / arm", as the report names it
    ids: list[str]  # train + val
    items: dict[str, Item]  # where those ids are
    source: str  # whose tokenization: the arm's role, or "builtin"
    policy: DataChecks  # the stage's `checks:`


def _stage_selections(
    plan: Plan, exp: Experiment, builtin: dict[str, Item], threshold: float | None
) -> tuple[list[_TrainedSelection], dict[str, CheckResult]]:
    """Per training stage and arm: what it trains on, and the leakage of its test items into
    its training items (by scope), under the stage's `checks:` policy."""
    from tunegate.ladder.selection import resolve_selection

    stages: list[_TrainedSelection] = []
    leaks: dict[str, CheckResult] = {}
    shingle_cache: ShingleCache = {}  # the stages' selections overlap
    for index, stage in enumerate(plan.stages):
        if stage.kind != "train":
            continue
        sel = resolve_selection(plan, exp, stage)
        for name in stage.arms or list(plan.arms):
            role = plan.arms[name].role
            items: dict[str, Item] = builtin if sel.builtin else exp.arm(role)
            scope = f"{index} {stage.name} / {name}"
            trained = list(dict.fromkeys(sel.train + sel.val))  # val = train in micro
            source: str = "builtin" if sel.builtin else role
            stages.append(_TrainedSelection(scope, trained, items, source, stage.checks))
            policy = stage.checks
            if sel.test and policy.leakage != "off":
                train, test = [items[i] for i in sel.train], [items[i] for i in sel.test]
                limit = policy.leakage_threshold if threshold is None else threshold
                leak = leakage(train, test, limit, cache=shingle_cache)
                if leak.verdict == "fail" and policy.leakage == "warn":
                    leak.verdict = "warn"
                leaks[scope] = leak
    return stages, leaks


@data_app.command()
def check(
    plan_path: Path = typer.Argument(DEFAULT_PLAN, metavar="[PLAN]"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        min=0.01,
        max=1.0,
        help=f"Near-duplicate threshold (Jaccard of token {LEAKAGE_NGRAM}-grams) for every "
        "stage, instead of each stage's checks.leakage_threshold.",
    ),
) -> None:
    """Check the plan's data; exit 1 if a check fails.

    Pairing; per arm, prompt boundaries and EOS; per training stage and arm, the token lengths
    of what it trains on (the plan's tokenizer and max_length) and train/test leakage.
    """
    from tunegate.data.arms import load_experiment
    from tunegate.data.items import load_items

    plan = load_plan(plan_path)
    # Prompt and metadata always; what the experiment arm declares besides (`may_differ_in`).
    may_differ = ("prompt", "metadata", *plan.arms[plan.arm_name("experiment")].may_differ_in)
    report = CheckReport()
    with TokenWorker(resolve_model(plan.model.name)) as worker:  # importing TRL, on another core
        try:
            exp = load_experiment(plan)
        except UserError:
            # load_experiment stops at the first pairing problem: list them all. Any other
            # problem (a file's own errors, a scenario) is raised again, as `tunegate run` does.
            control = load_items(plan.arms[plan.arm_name("control")].data)
            experiment = load_items(plan.arms[plan.arm_name("experiment")].data)
            paired = pairing(control, experiment, may_differ)
            if paired.verdict != "fail":
                raise
            report.add(paired, scope="arms")
        else:
            report.add(
                pairing(list(exp.control.values()), list(exp.experiment.values()), may_differ),
                scope="arms",
            )
            _check_plan(report, plan, exp, worker, threshold)
    _print_report(report, f"Data checks: {plan.name}", as_json)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


@data_app.command("check-file")
def check_file(
    file: Path = typer.Argument(..., help="A JSONL file of items."),
    max_length: int = typer.Option(
        512, "--max-length", min=1, help="Token limit per sample (the plan's model.max_length)."
    ),
    model: str = typer.Option(
        "tiny-llama", "--model", help="Whose tokenizer counts: tiny-llama or a model directory."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    threshold: float = _threshold_option(),
) -> None:
    """Check one JSONL file on its own; exit 1 if a check fails.

    Schema (every problem listed, exit 2), duplicates, token lengths, prompt boundaries, EOS.
    """
    from tunegate.data.items import load_items

    with TokenWorker(resolve_model(model)) as worker:  # importing TRL, on another core
        items = load_items(file)
        worker.submit([items])
        scenarios = Counter(i.scenario for i in items)
        report = CheckReport()
        scope = str(file)
        report.add(
            CheckResult(
                "items",
                "ok",
                f"{len(items)} valid items; scenarios: "
                + ", ".join(f"{s} {n}" for s, n in scenarios.items()),
                data={"items": len(items), "scenarios": dict(scenarios)},
            ),
            scope=scope,
        )
        report.add(duplicates(items, threshold), scope=scope)
        [(codes, eos)] = worker.result()
    report.add(token_lengths(items, None, max_length, encoded=codes), scope=scope)
    report.add(prompt_boundary(codes), scope=scope)
    report.add(eos, scope=scope)
    _print_report(report, f"Data checks: {file}", as_json)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


# --- derive, micro --------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\(\\|n|t)")


def _read_template(value: str) -> str:
    """`@FILE`: the file's text verbatim. Otherwise the text with \\n, \\t and \\\\ unescaped,
    because a shell argument cannot easily carry a newline."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("template file does not exist", where=str(path)) from None
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"cannot read the template: {err}", where=str(path)) from None
    return _ESCAPE.sub(lambda m: {"\\": "\\", "n": "\n", "t": "\t"}[m[1]], value)


def _write_atomically(path: Path, text: str) -> None:
    # A temp file in the same directory, then a rename: an interrupted write leaves the old file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@data_app.command()
def derive(
    control: Path = typer.Argument(..., help="The control arm's JSONL file."),
    template: str = typer.Option(
        ...,
        "--template",
        "-t",
        help="The experiment prompt: TEXT or @FILE, over {prompt}, {metadata[KEY]}, {metadata}, "
        "{metadata_json}, {id}, {scenario}, {language} (see tunegate.data.derive).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the experiment arm."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Derive the experiment arm from the control arm by a prompt template.

    Each prompt is rendered from the template and the item's metadata; ids, completions, tests
    and metadata stay as they are.
    """
    from tunegate.data.derive import derive_experiment
    from tunegate.data.items import load_items

    text = _read_template(template)
    if out.resolve() == control.resolve():
        raise UserError("--out must not be the control file itself", where=str(out))
    refuse_overwrite([out], force)
    items = load_items(control)
    derived = derive_experiment(items, text, where=str(control))
    _write_atomically(
        out, "".join(i.model_dump_json(exclude_defaults=True) + "\n" for i in derived)
    )
    changed = sum(c.prompt != d.prompt for c, d in zip(items, derived, strict=True))
    console.print(f"Wrote {len(derived)} items to {out} ({changed} prompts differ from control).")
    if changed < len(derived):
        console.print(
            f"[yellow]warning:[/] {len(derived) - changed} prompt(s) are the same in both arms"
        )
    console.print(Text(f"First prompt ({derived[0].id}):\n") + Text(derived[0].prompt, style="dim"))


@data_app.command()
def micro(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for train.jsonl and val.jsonl."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write the original plan's 5-sample micro dataset as train.jsonl and val.jsonl.

    The same 5 lines in both, as the original plan (val = train).
    """
    from tunegate.data.micro import SEED_MICRO_SAMPLES

    paths = [out / "train.jsonl", out / "val.jsonl"]
    refuse_overwrite(paths, force)
    text = "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in SEED_MICRO_SAMPLES)
    for path in paths:
        _write_atomically(path, text)
    console.print(f"Wrote {len(SEED_MICRO_SAMPLES)} samples to {paths[0]} and {paths[1]}.")


# --- preview --------------------------------------------------------------------------------


def _find_item(item_id: str, path: Path) -> Item:
    from tunegate.data.items import load_items
    from tunegate.data.micro import micro_items

    items = {i.id: i for i in load_items(path)}
    builtin = {i.id: i for i in micro_items()}
    if item_id in items:
        return items[item_id]
    if item_id in builtin:
        return builtin[item_id]
    close = difflib.get_close_matches(item_id, [*items, *builtin], n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise UserError(f"no item with id '{item_id}'{hint}", where=str(path))


@data_app.command()
def preview(
    item_id: str = typer.Argument(..., metavar="ID", help="The item's id."),
    plan_path: Path = typer.Argument(DEFAULT_PLAN, metavar="[PLAN]"),
    arm: str = typer.Option("control", "--arm", help="control | experiment (or an arm's name)."),
    plain: bool = typer.Option(False, "--plain", help="One line per token, no colour."),
) -> None:
    """Show which tokens of an item are trained and which are masked.

    TRL's prepared example through TRL's collator, as training sees it: masked (the prompt),
    trained (completion and EOS), cut (past max_length).
    """
    plan = load_plan(plan_path)
    roles: dict[str, str] = {a.role: name for name, a in plan.arms.items()}
    name = arm if arm in plan.arms else roles.get(arm)
    if name is None:
        raise UserError(
            f"--arm: '{arm}' is neither a role (control, experiment) nor an arm "
            f"({', '.join(plan.arms)})"
        )
    item = _find_item(item_id, plan.arms[name].data)
    max_length = plan.model.max_length
    tokenizer = _tokenizer(resolve_model(plan.model.name))
    item = PromptFormat.of(plan.model).render_items(tokenizer, [item])[0]  # as training sees it
    result = label_mask_preview(item, tokenizer, max_length)
    header = (
        f"item '{item.id}', arm {name}, model {plan.model.name}, max_length {max_length}: "
        f"{len(result.tokens)} tokens, {result.count('masked')} masked, "
        f"{result.count('trained')} trained, {result.count('cut')} cut"
    )
    if plain:
        print(header)
        if result.dropped:
            print("TRL drops this example: no token is trained after truncation")
        for t in result.tokens:
            print(f"{t.index:>5} {t.id:>7} {t.status:<7} {t.text!r}")
        return
    console.print(Text(header, style="bold"))
    if result.dropped:
        console.print("[red]TRL drops this example: no token is trained after truncation[/]")
    styles = {"masked": "dim", "cut": "red strike"}
    text = Text()
    for t in result.tokens:
        # Adjacent trained tokens alternate shades so their boundaries show.
        style = styles.get(t.status) or ("green" if t.index % 2 else "bold bright_green")
        shown = t.text.replace("\n", "↵\n") if t.status == "trained" else t.text
        text.append(shown, style=style)
    console.print(text)
    console.print(
        Text("masked", style="dim")
        + Text(" · ")
        + Text("trained", style="green")
        + Text(" · ")
        + Text("cut", style="red strike")
        + Text("   (--plain: one line per token with its id)")
    )


@data_app.command()
def example(
    directory: Path = typer.Argument(..., help="Where to write tunegate.yaml and data/."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Write the original plan's five scenarios (python, bugfix, sql, express-api,
    react-components) as control and experiment arms, with a plan that runs the original plan's
    ladder on them. Offline."""
    plan_path = directory / "tunegate.yaml"
    refuse_overwrite([plan_path], force)
    plan, control, experiment = write_example(directory)
    console.print(f"Wrote {plan}, {control}, {experiment}.")
