"""The code in a model's answer (`tunegate.evaluate.extract`): each rule on small answers, and
every rule at once on real answers of SmolLM2-135M-Instruct (tests/fixtures/smollm2/, made by
`python -m tools.smollm2_fixtures`, each extraction checked by a person)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from tunegate.data.items import Item, load_items
from tunegate.evaluate.extract import entry_point_from_tests, extract, extract_code
from tunegate.evaluate.metrics import Case, Context, code_of, metric

FIXTURES = Path(__file__).parent / "fixtures" / "smollm2"
SCENARIOS = Path(__file__).parents[1] / "src/tunegate/resources/seed-scenarios/data"


def _fixtures() -> list[dict[str, Any]]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        for fixture in json.loads(path.read_text()):
            out.append({**fixture, "file": path.stem})
    return out


FIXTURE_LIST = _fixtures()


def _items(arm: str) -> dict[str, Item]:
    return {i.id: i for i in load_items(SCENARIOS / f"{arm}.jsonl")}


# --- fenced blocks -----------------------------------------------------------------------------


def test_one_fenced_block_is_the_code() -> None:
    answer = "Here it is:\n\n```python\ndef f(x):\n    return x + 1\n```\n\nIt adds one."
    got = extract(answer, entry_point="f")
    assert got.code == "def f(x):\n    return x + 1\n"
    assert got.how == "fenced"


@pytest.mark.parametrize(
    ("opening", "closing"),
    [("```py", "```"), ("```", "```"), ("~~~python", "~~~"), ("````python3", "`````")],
)
def test_fence_styles(opening: str, closing: str) -> None:
    answer = f"Sure.\n{opening}\ndef f():\n    return 1\n{closing}\nBye."
    assert extract_code(answer, entry_point="f") == "def f():\n    return 1\n"


def test_a_fence_indented_in_a_list_item_unindents_its_code() -> None:
    answer = "1. The function:\n   ```python\n   def f():\n       return 1\n   ```\n"
    assert extract_code(answer) == "def f():\n    return 1\n"


def test_the_block_that_defines_the_entry_point_is_chosen() -> None:
    answer = (
        "Usage first:\n```python\nprint(g(2))\n```\n"
        "The function:\n```python\ndef g(x):\n    return 2 * x\n```\n"
        "Another:\n```python\ndef h():\n    pass\n```\n"
    )
    got = extract(answer, entry_point="g")
    assert got.code == "def g(x):\n    return 2 * x\n"
    assert got.how == "fenced:2-of-3"
    # Without an entry point, the first block in the language: the usage here.
    assert extract_code(answer) == "print(g(2))\n"


def test_of_two_implementations_the_first_is_the_answer() -> None:
    answer = (
        "```python\ndef f(s):\n    return s[::-1]\n```\nor\n"
        "```python\ndef f(s):\n    return ''.join(reversed(s))\n```\n"
    )
    assert extract_code(answer, entry_point="f") == "def f(s):\n    return s[::-1]\n"


def test_a_block_in_the_language_beats_a_block_in_another() -> None:
    answer = "```bash\npip install nothing\n```\n```python\nx = 1\n```\n"
    assert extract_code(answer) == "x = 1\n"
    assert extract_code(answer, language="sql") == "pip install nothing\n"  # none fits: first


def test_imports_and_helpers_from_other_blocks_join_the_function() -> None:
    answer = (
        "Imports:\n```python\nimport math\nimport os\n```\n"
        "Helper:\n```python\ndef square(x):\n    return x * x\n```\n"
        "Function:\n```python\ndef hyp(a, b):\n    return math.sqrt(square(a) + square(b))\n```\n"
        "Usage:\n```python\nprint(hyp(3, 4))\n```\n"
    )
    got = extract(answer, entry_point="hyp")
    assert got.how == "fenced:3-of-4+joined"
    assert got.code == (
        "import math\n\n"
        "def square(x):\n    return x * x\n\n"
        "def hyp(a, b):\n    return math.sqrt(square(a) + square(b))\n"
    )  # `import os` is not needed, the usage block is not a definition
    namespace: dict[str, Any] = {}
    exec(got.code, namespace)
    assert namespace["hyp"](3, 4) == 5.0


def test_unclosed_fence_is_the_text_after_it() -> None:
    answer = "Sure:\n```python\ndef f(x):\n    y = x * 2\n    return y\n"
    got = extract(answer)
    assert got.code == "def f(x):\n    y = x * 2\n    return y\n"
    assert got.how == "unclosed"


def test_a_cut_off_example_after_a_finished_function_is_cut() -> None:
    answer = "```python\ndef f(x):\n    return x\n\nprint(f([1, 2,"
    got = extract(answer, entry_point="f")
    assert got.code == "def f(x):\n    return x\n"
    assert got.cut


def test_a_function_cut_off_in_its_body_stays_broken() -> None:
    answer = "```python\ndef f(x):\n    if x:\n        return [1,"
    assert extract_code(answer, entry_point="f") == "def f(x):\n    if x:\n        return [1,\n"


# --- no fence ----------------------------------------------------------------------------------


def test_prose_around_unfenced_python_is_stripped() -> None:
    answer = (
        "Here is a function that adds two numbers:\n\n"
        "def add(a, b):\n"
        "    # the sum\n"
        "    return a + b\n\n"
        "This function takes two arguments and returns their sum.\n"
        "You can call it like add(1, 2).\n"
    )
    got = extract(answer, entry_point="add")
    assert got.code == "def add(a, b):\n    # the sum\n    return a + b\n"
    assert got.how == "unfenced"


def test_unfenced_code_ends_before_output_lines() -> None:
    answer = "from math import pi\n\ndef area(r):\n    return pi * r * r\n\nOutput:\n3.14\n"
    assert extract_code(answer) == "from math import pi\n\ndef area(r):\n    return pi * r * r\n"


@pytest.mark.parametrize(
    "answer",
    [
        "def add(a, b):\n    return a + b\n",
        "    return a + b\n",  # a completion of a prompt's signature
        "def add(a, b):\n    return a +\n",  # broken: stays broken
        "def add(a, b):\n    return a + b\nfoo(",
        "def add(a, b):\n    if a:\n        return 1\n    elif a and b and a ==",  # cut off
        "nonsense(",
        "",
    ],
)
def test_raw_code_is_unchanged(answer: str) -> None:
    got = extract(answer, entry_point="add")
    assert got.code == answer
    assert got.how == "raw"


def test_javascript_fenced_and_unfenced() -> None:
    answer = (
        "Here:\n```javascript\nconsole.log(sumArray([1]));\n```\n```js\n"
        "const sumArray = (arr) => arr.reduce((a, b) => a + b, 0);\n```\nDone."
    )
    got = extract(answer, language="javascript", entry_point="sumArray")
    assert got.code == "const sumArray = (arr) => arr.reduce((a, b) => a + b, 0);\n"
    assert got.how == "fenced:2-of-2"
    plain = "Here is the function:\nfunction f() { return 1; }\n"
    assert extract_code(plain, language="javascript", entry_point="f") == plain


def test_sql_fenced() -> None:
    answer = "The query:\n```sql\nSELECT name FROM t;\n```\nIt selects names."
    assert extract_code(answer, language="sql") == "SELECT name FROM t;\n"


# --- top-level code after the function ---------------------------------------------------------


def test_top_level_examples_asserts_and_main_guard_are_dropped() -> None:
    code = (
        "import re\n"
        "PATTERN = re.compile('a')\n\n"
        "def f(x):\n    return PATTERN.sub('b', x)\n\n"
        "# Test the function\n"
        "print(f('a'))\n"
        "assert f('a') == 'wrong'\n"
        "result = f('aa')\n"
        "name = input()\n"
        "for s in ['a']:\n    print(f(s))\n\n"
        "if __name__ == '__main__':\n    print(f('x'))\n"
    )
    got = extract(f"```python\n{code}```", entry_point="f")
    assert got.code == (
        "import re\nPATTERN = re.compile('a')\n\ndef f(x):\n    return PATTERN.sub('b', x)\n"
    )
    assert len(got.dropped) == 6
    # The same code unfenced: the same program.
    assert extract_code(code, entry_point="f") == got.code


def test_without_an_entry_point_top_level_code_stays() -> None:
    code = "def f():\n    return 1\n\nprint(f())\n"
    assert extract_code(f"```python\n{code}```") == code


def test_an_entry_point_the_code_does_not_define_drops_nothing() -> None:
    code = "def g():\n    return 1\n\nprint(g())\n"
    assert extract_code(code, entry_point="f") == code


def test_entry_point_from_tests() -> None:
    humaneval = "def check(candidate):\n    assert candidate(1) == 2\n\n\ncheck(inc)\n"
    assert entry_point_from_tests(humaneval) == "inc"
    assert entry_point_from_tests("import math\nassert add(1, math.pi) > 4\n") == "add"
    assert entry_point_from_tests("assert f(1) == g(1)\n") is None  # two: ambiguous
    assert entry_point_from_tests("SELECT 1;", "sql") is None
    assert entry_point_from_tests(None) is None


# --- wired into the metrics --------------------------------------------------------------------


def test_an_arm_without_metadata_is_extracted_like_one_with_it() -> None:
    control, experiment = _items("control"), _items("experiment")
    answer = (
        "```python\ndef has_close_elements(numbers, threshold):\n    return False\n\n"
        "assert has_close_elements([1.0], 0.5) is True\n```"
    )
    c, e = control["python-he000"], experiment["python-he000"]
    assert "entry_point" not in c.metadata and e.metadata["entry_point"] == "has_close_elements"
    assert (
        code_of(c, answer)
        == code_of(e, answer)
        == ("def has_close_elements(numbers, threshold):\n    return False\n")
    )


def test_metrics_score_the_extracted_code() -> None:
    item = _items("experiment")["python-he000"]
    answer = (
        "Here is the completed function:\n\n```python\nfrom typing import List\n\n\n"
        f"{item.completion.strip()}\n\n"
        "print(has_close_elements([1.0, 2.0], 0.5))\nassert has_close_elements([], 1) is None\n"
        "```\n\nThis checks every pair."
    )
    scores = metric("functional_correctness").score([Case(item, answer)], Context())
    assert scores[0].value == 1.0, scores[0]
    assert metric("syntax_validity").score([Case(item, answer)], Context())[0].value == 1.0


# --- real answers ------------------------------------------------------------------------------


def test_fixtures_are_there_and_small() -> None:
    assert len(FIXTURE_LIST) >= 20
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.json")) < 400_000


@pytest.mark.parametrize("fixture", FIXTURE_LIST, ids=[f["id"] for f in FIXTURE_LIST])
def test_real_answers(fixture: dict[str, Any]) -> None:
    assert fixture["reviewed"], "a person has not checked this extraction yet"
    got = extract_code(
        fixture["answer"], language=fixture["language"], entry_point=fixture["entry_point"]
    )
    assert got == fixture["expected"]
    if fixture["language"] == "python" and fixture["finish"] == "eos":
        ast.parse(got)  # a finished answer's code parses


def test_real_answers_run_as_recorded() -> None:
    """The HumanEval answers' programs against their tests: the verdicts recorded in the
    fixtures (a change to the extraction that breaks a passing program shows here)."""
    items = {"control": _items("control"), "experiment": _items("experiment")}
    fixtures = [f for f in FIXTURE_LIST if f["file"] in items]
    cases = [Case(items[f["file"]][f["id"]], f["answer"]) for f in fixtures]
    scores = metric("functional_correctness").score(cases, Context())
    got = {f["id"]: s.detail.split(" ")[0] for f, s in zip(fixtures, scores, strict=True)}
    assert got == {f["id"]: f["verdict"] for f in fixtures}


def test_a_fenced_reference_answer_is_compared_by_its_code() -> None:
    # The real-model example's completions are fenced, as an instruct model answers; an answer
    # with the same code, fenced or not, is an exact match.
    code = "def add(a, b):\n    return a + b\n"
    item = Item(id="a", scenario="python", prompt="p", completion="```python\n" + code + "```")
    for answer in (code, "Here it is:\n```python\n" + code + "```\nIt adds."):
        [score] = metric("code_accuracy").score([Case(item, answer)], Context())
        assert score.value == 1.0, answer
    [wrong] = metric("code_accuracy").score([Case(item, code.replace("+", "-"))], Context())
    assert wrong.value == 0.0
