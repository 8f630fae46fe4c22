"""dvc.yaml's code deps cannot drift from the code: each stage's deps cover every repository file it imports.

A stage's import closure starts at the module of its ``cmd: python -m pipelines.<stage>`` and follows every
import statement (also those inside functions) into the repository's ``anytime/`` and ``pipelines/``; a
package's ``__init__.py`` counts, since importing anything below it runs it. A dep may be a folder.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from pipelines.training.run_plan import TRAINING_CODE

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("anytime", "pipelines")
STAGES: dict[str, dict] = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
COMMAND = re.compile(r"^python -m (pipelines\.\w+)\b")


def module_file(name: str) -> Path | None:
    """The repository file that defines module ``name``, or None if it is not one of ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an import statement in ``path`` may load, with the packages above it."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            base = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    return names | parents


def import_closure(module: str) -> set[str]:
    """Repository files (posix, relative to the root) that importing ``module`` loads."""
    start = module_file(module)
    assert start is not None, f"{module} is not a module of this repository"
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for f in map(module_file, imported_names(path)) if f is not None)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def code_deps(stage: str) -> list[str]:
    return [d for d in STAGES[stage].get("deps", []) if d.split("/")[0] in PACKAGES]


def stage_module(stage: str) -> str:
    match = COMMAND.match(STAGES[stage]["cmd"])
    assert match, f"stage {stage}: cmd {STAGES[stage]['cmd']!r} is not `python -m pipelines.<module>`"
    return match.group(1)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_file_the_stage_imports(stage: str) -> None:
    closure = import_closure(stage_module(stage))
    missing = sorted(f for f in closure if not covered(f, code_deps(stage)))
    assert not missing, f"stage {stage}: dvc.yaml deps miss {', '.join(missing)} (imported by its cmd)"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_exist_and_are_imported(stage: str) -> None:
    closure = import_closure(stage_module(stage))
    stale = [d for d in code_deps(stage) if not any(covered(f, [d]) for f in closure)]
    assert not stale, f"stage {stage}: dvc.yaml deps {', '.join(stale)} are not imported by the stage"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_is_its_own_module_and_imports_no_other_stage(stage: str) -> None:
    assert stage_module(stage) == f"pipelines.{stage}", f"stage {stage} runs {stage_module(stage)}"
    others = {f"pipelines/{other}.py" for other in STAGES if other != stage}
    imported = sorted(import_closure(stage_module(stage)) & others)
    assert not imported, f"stage {stage} imports the stage module(s) {', '.join(imported)}"


def test_the_stage_modules_are_exactly_the_dvc_stages() -> None:
    """At a glance: a top-level ``pipelines/*.py`` with a ``__main__`` entry point is a dvc.yaml stage."""
    entry_points = {
        path.stem
        for path in (ROOT / "pipelines").glob("*.py")
        if '__name__ == "__main__"' in path.read_text()
    }
    assert entry_points == set(STAGES)


def test_training_fingerprint_covers_the_worker_and_is_in_train_and_tune_deps() -> None:
    """Editing code the workers run must change the run fingerprints (re-train) and re-run both stages."""
    worker = import_closure("pipelines.training.train_worker")
    missing = sorted(f for f in worker if not covered(f, list(TRAINING_CODE)))
    assert not missing, f"TRAINING_CODE (pipelines/training/run_plan.py) misses {', '.join(missing)}"
    for stage in ("train", "tune"):
        absent = [entry for entry in TRAINING_CODE if not covered(entry, code_deps(stage))]
        assert not absent, f"stage {stage}: dvc.yaml deps miss TRAINING_CODE entries {', '.join(absent)}"


def test_the_closure_follows_nested_imports_and_package_inits_and_stays_in_the_repository() -> None:
    closure = import_closure("pipelines.ray_cluster")
    assert "pipelines/config/train.py" in closure  # imported inside an ``if`` block
    assert "anytime/weighting/adaloss.py" in closure  # via anytime/weighting/__init__.py
    assert {"pipelines/__init__.py", "pipelines/config/__init__.py"} <= closure
    assert all(f.split("/")[0] in PACKAGES for f in closure)
    assert "pipelines/train.py" not in import_closure("pipelines.tuning.trial")
