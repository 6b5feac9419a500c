"""Find the calculators: every module in factors/calculators/ (or given folders) exporting one or more instances.

A module exports `CALCULATOR_INSTANCE = MyFactor()` or `CALCULATOR_INSTANCES = [MyFactor(a), MyFactor(b)]`.
Modules whose names start with `_`, and `template.py`, are never loaded as factors. One broken file never stops the
others: import errors, wrong types, bad names become `Problem`s that name the file; a duplicate name keeps the first
definition and refuses the later one (see _refuse_duplicates).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import re
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from factors.calculator import AlphaCalculatorBase

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent / "calculators"
BUILTIN_PACKAGE = "factors.calculators"
SKIPPED_FILES = frozenset({"template.py"})
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Problem:
    """Why a file or calculator was not loaded."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class _Found:
    calculator: AlphaCalculatorBase
    file: str


def _module_name(folder: Path, stem: str) -> str:
    if folder == BUILTIN_DIR:
        return f"{BUILTIN_PACKAGE}.{stem}"
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    return f"lsq_factors_{digest}.{stem}"


def _import(path: Path, module_name: str) -> ModuleType:
    """Import a calculator file; shipped ones as a package module, others freshly from their file."""
    if module_name.startswith(BUILTIN_PACKAGE + "."):
        return importlib.import_module(module_name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _exports(module: ModuleType, file: str) -> tuple[list[AlphaCalculatorBase], list[Problem]]:
    """The calculator instances a module exports, checked for type and name."""
    exported: list[object] = []
    if hasattr(module, "CALCULATOR_INSTANCE"):
        exported.append(module.CALCULATOR_INSTANCE)
    if hasattr(module, "CALCULATOR_INSTANCES"):
        many = module.CALCULATOR_INSTANCES
        if not isinstance(many, list | tuple):
            return [], [Problem(file, f"CALCULATOR_INSTANCES must be a list, got {type(many).__name__}")]
        exported.extend(many)
    good: list[AlphaCalculatorBase] = []
    problems: list[Problem] = []
    for obj in exported:
        if isinstance(obj, type) and issubclass(obj, AlphaCalculatorBase):
            problems.append(Problem(file, f"exports the class {obj.__name__}, not an instance: use {obj.__name__}()"))
        elif not isinstance(obj, AlphaCalculatorBase):
            problems.append(Problem(file, f"exports a {type(obj).__name__}, not an AlphaCalculatorBase instance"))
        elif not isinstance(obj.name, str) or not NAME_RE.match(obj.name):
            problems.append(
                Problem(file, f"calculator name {obj.name!r} must be lowercase letters, digits and _, starting a-z")
            )
        else:
            good.append(obj)
    return good, problems


def _import_problem(file: str, exc: BaseException) -> Problem:
    if isinstance(exc, SyntaxError):
        return Problem(file, f"syntax error at line {exc.lineno}: {exc.msg}")
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"line {f.lineno}" for f in reversed(frames) if f.filename == file), "import")
    return Problem(file, f"failed at import ({where}): {type(exc).__name__}: {exc}")


def calculator_files(folder: Path) -> list[Path]:
    """Candidate factor modules of a folder, in name order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_") and p.name not in SKIPPED_FILES)


def load_folder(folder: Path) -> tuple[list[_Found], list[Problem]]:
    found: list[_Found] = []
    problems: list[Problem] = []
    folder = folder.resolve()
    for path in calculator_files(folder):
        file = str(path)
        try:
            module = _import(path, _module_name(folder, path.stem))
        except (Exception, SystemExit) as exc:
            problems.append(_import_problem(file, exc))
            continue
        good, bad = _exports(module, file)
        found.extend(_Found(c, file) for c in good)
        problems.extend(bad)
    return found, problems


def _refuse_duplicates(found: list[_Found]) -> tuple[list[_Found], list[Problem]]:
    """A name defined twice keeps its first definition and refuses the later ones, naming both files.

    First means discovery order: folders in the order given (the shipped folder first by default), files by name
    within a folder, instances in export order. Dropping both (as before) let a new file silently disable a shipped
    factor; keeping the first keeps what ran yesterday running and makes the newcomer's problem loud.
    """
    first: dict[str, str] = {}
    kept: list[_Found] = []
    problems: list[Problem] = []
    for f in found:
        name = f.calculator.name
        if name not in first:
            first[name] = f.file
            kept.append(f)
            continue
        where = "earlier in this file" if first[name] == f.file else f"in {first[name]}"
        problems.append(
            Problem(
                f.file,
                f"duplicate calculator name {name!r}: the first definition ({where}) is kept and this one is "
                "refused; give one of them another name",
            )
        )
    return kept, problems


def discover(
    folders: Sequence[Path] | None = None, enabled: Iterable[str] = (), weights: Iterable[str] = ()
) -> tuple[list[AlphaCalculatorBase], list[Problem]]:
    """Calculators from `folders` (default: the shipped factors/calculators/), sorted by name, and the problems.

    `enabled` (strategy.calculators.enabled) keeps only the named calculators; empty keeps all. An enabled name, or
    a name in `weights` (the keys of strategy.calculators.weights), that no loaded calculator has is a problem too,
    so a typo in the configuration is visible instead of silently doing nothing.
    """
    found: list[_Found] = []
    problems: list[Problem] = []
    for folder in folders if folders is not None else [BUILTIN_DIR]:
        f, p = load_folder(Path(folder))
        found.extend(f)
        problems.extend(p)
    found, dupes = _refuse_duplicates(found)
    problems.extend(dupes)
    wanted = list(enabled)
    if wanted:
        names = {f.calculator.name for f in found}
        problems.extend(
            Problem("strategy.calculators.enabled", f"enabled calculator {n!r} was not found")
            for n in wanted
            if n not in names
        )
        found = [f for f in found if f.calculator.name in set(wanted)]
    loaded = {f.calculator.name for f in found}
    problems.extend(
        Problem("strategy.calculators.weights", f"weight for {n!r} has no effect: no such calculator is loaded")
        for n in sorted(set(weights) - loaded)
    )
    for problem in problems:
        log.warning("calculator problem: %s", problem)
    return sorted((f.calculator for f in found), key=lambda c: c.name), problems
