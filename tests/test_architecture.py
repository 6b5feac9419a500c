"""The package layering, read from the source's imports (ast): what the README's architecture section promises.

- no cycle between the top-level packages;
- the core `lsq/` imports no stage, except its composition root (the `lsq` command, lsq/cli.py);
- no stage (collectors, factors, executors, monitoring) imports Dagster or the code location;
- product code never imports the simulator (only tests, benchmarks and the composition root's `lsq sim` command);
- nothing imports Dagster's private modules (`dagster._...`) outside tests.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "lsq"
STAGES = ("collectors", "factors", "executors", "monitoring")
PIPELINE = "lsq_pipeline"
SIMULATOR = "simulator"
PRODUCT = (CORE, *STAGES, PIPELINE)
PACKAGES = (*PRODUCT, SIMULATOR)
# The one module of the core allowed to name stages: it registers every package's subcommands.
COMPOSITION_ROOT = "lsq/cli.py"


def modules(package: str) -> Iterator[Path]:
    folder = ROOT / package
    yield from sorted(folder.rglob("*.py")) if folder.is_dir() else ()


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (lazy imports inside functions count too), plus the modules named
    in a COMMAND_MODULES tuple (loaded by name)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "COMMAND_MODULES" for t in node.targets
        ):
            found.update(
                c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def package_graph() -> dict[str, set[str]]:
    """Package -> the other packages it imports. The composition root is left out: it imports every stage by design
    (and every stage imports the core), so it sits on top of the graph rather than in it."""
    return {
        pkg: {
            top(m)
            for path in modules(pkg)
            if rel(path) != COMPOSITION_ROOT
            for m in imports(path)
            if top(m) in PACKAGES and top(m) != pkg
        }
        for pkg in PACKAGES
    }


def test_the_layout_exists() -> None:
    """Guards the test itself: an empty scan would pass every rule below."""
    assert len(list(modules(CORE))) > 10 and len(list(modules(PIPELINE))) > 10
    assert imports(ROOT / COMPOSITION_ROOT) >= {"lsq_pipeline.cli", "factors.cli", "simulator.cli"}


def test_no_cycle_between_packages() -> None:
    graph = package_graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail(f"import cycle between packages: {' -> '.join([*trail, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for pkg in PACKAGES:
        if pkg not in state:
            visit(pkg, [])


def test_the_core_uses_no_stage_except_in_its_composition_root() -> None:
    offenders = [
        f"{rel(path)} imports {m}"
        for path in modules(CORE)
        if rel(path) != COMPOSITION_ROOT
        for m in sorted(imports(path))
        if top(m) in (*STAGES, PIPELINE, SIMULATOR)
    ]
    assert offenders == []


def test_no_stage_imports_dagster_or_the_code_location() -> None:
    offenders = [
        f"{rel(path)} imports {m}"
        for pkg in STAGES
        for path in modules(pkg)
        for m in sorted(imports(path))
        if top(m) in ("dagster", "dagster_graphql", PIPELINE)
    ]
    assert offenders == []


def test_product_code_never_imports_the_simulator() -> None:
    offenders = [
        f"{rel(path)} imports {m}"
        for pkg in PRODUCT
        for path in modules(pkg)
        if rel(path) != COMPOSITION_ROOT
        for m in sorted(imports(path))
        if top(m) == SIMULATOR
    ]
    assert offenders == []


# A custom instance storage (Dagster's documented `storage: custom: {module, class}` extension point) has to
# subclass the storages it extends, which Dagster only exports from its private modules; these two modules (the
# sqlite and the PostgreSQL storage) may.
PRIVATE_DAGSTER_ALLOWED = {"lsq_pipeline/storage.py", "lsq_pipeline/postgres_storage.py"}
# A custom run launcher can only be written against Dagster's internals (its docs' "Internals: Run launchers" page
# documents RunLauncher and ConfigurableClass there); the warm worker runs `dagster api execute_run`'s own body and
# arguments rather than a copy of them. Exactly these, in exactly these two modules, pinned dagster==1.13.27 (the
# worker also preloads the modules a run imports, by name: warm_worker.RUN_MODULES).
RUN_LAUNCHER_INTERNALS = {
    "lsq_pipeline/launcher.py": {
        "dagster._config.config_schema",
        "dagster._config.config_schema.UserConfigSchema",
        "dagster._core.code_pointer",
        "dagster._core.code_pointer.ModuleCodePointer",
        "dagster._core.launcher.base",
        "dagster._core.launcher.base.CheckRunHealthResult",
        "dagster._core.launcher.base.LaunchRunContext",
        "dagster._core.launcher.base.WorkerStatus",
        "dagster._grpc.types",
        "dagster._grpc.types.ExecuteRunArgs",
        "dagster._serdes",
        "dagster._serdes.serialize_value",
        "dagster._serdes.config_class",
        "dagster._serdes.config_class.ConfigurableClassData",
    },
    "lsq_pipeline/warm_worker.py": {
        "dagster._cli.api",
        "dagster._cli.api.execute_run_command",
        "dagster._core.instance.ref",
        "dagster._core.instance.ref.InstanceRef",
    },
}


def test_no_dagster_private_module_outside_tests() -> None:
    offenders = [
        f"{rel(path)} imports {m}"
        for pkg in (*PACKAGES, "benchmarks")
        for path in modules(pkg)
        for m in sorted(imports(path))
        if m.startswith("dagster._")
        and rel(path) not in PRIVATE_DAGSTER_ALLOWED
        and m not in RUN_LAUNCHER_INTERNALS.get(rel(path), set())
    ]
    assert offenders == []
