"""Who may import whom (docs/architecture.md): checked on the source, function-level imports included.

    contract/    the ground floor: imports no package of the engine
    tasks/       pure data: contract only
    analysis/    Polars over Parquet: contract only (never torch, ray, transformers)
    study/       spec, plans, CLI: contract, tasks and analysis (`study report`, `study status`);
                 trainables only in the orchestration entry point
    trainables/  everything that touches a model: contract and tasks, never study or analysis

A second check runs the study side for real: a study file is loaded and validated, and its plans
built, in a process where `trainables` cannot be imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "tasks", "study", "trainables", "analysis")
HEAVY = ("torch", "ray", "transformers", "trl", "accelerate", "datasets", "peft")

# package -> the packages of the engine it may import
ALLOWED = {
    "contract": set(),
    "tasks": {"contract"},
    "analysis": {"contract"},
    "study": {"contract", "tasks", "analysis"},
    "trainables": {"contract", "tasks"},
}
# The one module of `study` that reaches trainables: it starts the work.
ENTRY_POINTS = {"study/orchestrate.py": {"trainables"}}
# Third-party libraries a package must not import even inside a function; tasks/ reads Hub
# datasets with `datasets` (inside the function that does), nothing heavier.
NO_HEAVY = {"contract": HEAVY, "tasks": tuple(h for h in HEAVY if h != "datasets"), "analysis": HEAVY}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's own package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
    return out


def layer_violations(root: Path = ROOT) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            allowed = ALLOWED[package] | ENTRY_POINTS.get(relative, set()) | {package}
            for line, module in imported_modules(path, root):
                top = module.split(".")[0]
                if top in PACKAGES and top not in allowed:
                    found.append(f"{relative}:{line} imports {module} ({package}/ may import {sorted(allowed - {package}) or 'no package of the engine'})")
                if top in NO_HEAVY.get(package, ()):
                    found.append(f"{relative}:{line} imports {module} ({package}/ never imports {', '.join(NO_HEAVY[package])})")
    return found


def test_every_package_imports_only_the_layers_below_it():
    assert layer_violations() == []


def test_the_layer_check_sees_a_function_level_import(tmp_path):
    """The check must catch what it is for: a late import of trainables inside a study function,
    and torch inside analysis."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "study" / "spec_checks.py").write_text(
        "def check():\n    from trainables.distributed import batch_size_problem\n")
    (tmp_path / "analysis" / "curves.py").write_text("import polars\n\ndef f():\n    import torch\n")
    (tmp_path / "study" / "orchestrate.py").write_text("from trainables.tune_trial import chain_trial\n")
    (tmp_path / "contract" / "plan.py").write_text("from .schema import TABLES\n")
    found = layer_violations(tmp_path)
    assert len(found) == 2
    assert found[0].startswith("study/spec_checks.py:2 imports trainables.distributed")
    assert found[1].startswith("analysis/curves.py:4 imports torch")


BLOCKER = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"blocked for this test: {{name}}")
        return None

sys.meta_path.insert(0, Blocked())
"""


def _run_blocked(blocked: set[str], body: str) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=blocked) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("preset", ["demo.yaml", "paper-first-stage-method.yaml"])
def test_a_study_is_validated_and_planned_without_trainables(preset, data_dir):
    """Loading, every check (mirror files, example counts, TRL's version) and planning run with
    `trainables` unimportable, and load none of torch, ray, transformers or trl on the way."""
    done = _run_blocked({"trainables"}, f"""
        import os, sys
        from study.spec_loading import load_spec_file
        from study.planner import build_plans

        spec = load_spec_file("study/presets/{preset}", ["model=tiny", "data_dir={data_dir}"])
        plans = build_plans(spec, study_dir="/tmp/layers", data_dir="{data_dir}",
                            base_model_path="/models/tiny-0123456789ab", chat=False)
        assert plans and all(len(p.stages) == len(spec.chains[p.chain]) for p in plans)
        heavy = sorted(m for m in ("torch", "ray", "transformers", "trl") if m in sys.modules)
        assert not heavy, heavy
        print(len(plans), "plans")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "plans" in done.stdout


def test_the_blocker_blocks():
    done = _run_blocked({"trainables"}, "import trainables.chain\n")
    assert done.returncode != 0 and "blocked for this test: trainables" in done.stderr


def architecture_map(text: str) -> set[str]:
    """The module paths listed in docs/architecture.md's map (its last code block)."""
    block = text.rsplit("```", 2)[-2]
    return {line.split()[0] for line in block.splitlines() if line.strip()}


def _defines_something(path: Path) -> bool:
    """A package's __init__.py that holds code of its own (a registry, an entry function), not
    one that only hands names on."""
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in ast.parse(path.read_text()).body)


def test_the_architecture_map_lists_every_module_and_no_other():
    listed = architecture_map((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    modules = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py") or _defines_something(p)}
    assert sorted(modules - listed) == [] and sorted(listed - modules) == []


def test_the_engine_folders_of_a_study_are_never_uploaded_with_a_job():
    """`ray job submit --working-dir .` from a folder holding results must not upload the
    engine's own state (checkpoint scratch, Ray's folders, built models, the ledger)."""
    from contract.layout import ENGINE_DIRS

    ignored = {line.strip() for line in (ROOT / ".rayignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert sorted(set(ENGINE_DIRS) - ignored) == []


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the engine's modules it imports (function-level imports included)."""
    modules = {".".join(p.relative_to(root).with_suffix("").parts): p
               for package in PACKAGES for p in (root / package).rglob("*.py")}
    modules = {name.removesuffix(".__init__"): path for name, path in modules.items()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, module in imported_modules(path, root):
            while module and module not in modules:  # `from a.b import c` names module a.b, or c inside a.b
                module = module.rpartition(".")[0]
            if module and module != name and not name.startswith(module + "."):
                targets.add(module)
        graph[name] = targets
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_itself_through_others():
    assert import_circles(import_graph()) == []


def test_the_circle_check_finds_a_circle_through_a_late_import(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "trainables" / "models.py").write_text("from trainables.ranks import model_device\n")
    (tmp_path / "trainables" / "ranks.py").write_text("def model_device():\n    from trainables.models import x\n")
    (tmp_path / "trainables" / "chain.py").write_text("from trainables import models\n")
    assert import_circles(import_graph(tmp_path)) == [["trainables.models", "trainables.ranks"]]


def test_validating_a_cpu_study_loads_no_ray(data_dir):
    """`study validate` on a CPU study starts nothing: it imports no ray or trl (torch and
    transformers it does: the needs block counts the model's parameters on the meta device and
    the study's tokens with its tokenizer, study.needs)."""
    done = _run_blocked({"ray", "trl"}, f"""
        from study.cli import main

        assert main(["validate", "demo", "--set", "data_dir={data_dir}"]) == 0
    """)
    assert done.returncode == 0, done.stderr[-3000:]
