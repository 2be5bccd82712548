"""The house's vital signs: module import cycles, the longest functions, function-local imports
and string-key reads of the run state.

    python tools/house.py            # the figures
    python tools/house.py --check    # and exit 1 on an import cycle between modules

Imports are read from the source (every `import`, at the top or inside a function: a cycle hidden
by a local import is still a cycle). import-linter (`make lint`) keeps the package-level
contracts; this adds the module-level view and the figures the redesign is measured by.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunegate"
# `x["key"]` and `.get("key")` on what are, by their names, state records.
STATE_KEY = re.compile(
    r"""\b(?:state|record|rec|arm_state|records)\[["'][a-z_]+["']\]"""
    r"""|\b(?:state|record|rec|arm_state|records)\.get\(["'][a-z_]+["']"""
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The tunegate modules (or names in them) an import statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def read_package() -> tuple[dict[str, set[str]], list[tuple[int, str]], int]:
    """(import graph between modules, (lines, function) for every function, local imports)."""
    sources = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in sources}
    graph: dict[str, set[str]] = defaultdict(set)
    functions: list[tuple[int, str]] = []
    local_imports = 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = module_name(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                where = f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
                functions.append((node.end_lineno - node.lineno + 1, where))
                local_imports += sum(
                    isinstance(sub, ast.Import | ast.ImportFrom) for sub in ast.walk(node)
                )
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in imported(node, module, path.name == "__init__.py"):
                    while target and target not in modules:  # a name → its module
                        target = target.rpartition(".")[0]
                    if target.startswith("tunegate") and target != module:
                        graph[module].add(target)
    functions.sort(reverse=True)
    return graph, functions, local_imports


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on a module import cycle")
    parser.add_argument("--longest", type=int, default=10, help="how many functions to list")
    args = parser.parse_args()
    graph, functions, local_imports = read_package()
    found = cycles(graph)
    state_keys = sum(len(STATE_KEY.findall(p.read_text())) for p in PACKAGE.rglob("*.py"))
    print(f"modules: {len({module_name(p) for p in PACKAGE.rglob('*.py')})}")
    print(f"import cycles between modules: {len(found)}")
    for component in found:
        print("  " + " ↔ ".join(component))
    print(f"functions over 80 lines: {sum(n > 80 for n, _ in functions)}; the longest:")
    for lines, where in functions[: args.longest]:
        print(f"  {lines:4d}  {where}")
    print(f"function-local imports: {local_imports}")
    print(f"string-key reads of state records: {state_keys}")
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
