"""The layout holds: the core stands on nothing above it, the worker only on the core, no import
circles, and every package says what it owns. Read from the source, so a new import that breaks a
rule fails here before it tangles the house."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "service"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (late imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(ROOT.rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_walk_sees_the_whole_service():
    assert {"service.core.jobs", "service.web.app", "service.worker.extract", "service.cli"} <= set(MODULES)


def _breaking(package: str, forbidden) -> set[tuple[str, str]]:
    """(module, import) pairs in ``package`` whose import ``forbidden`` refuses."""
    return {
        (mod, imp)
        for mod, imports in MODULES.items()
        if _within(mod, package)
        for imp in imports
        if forbidden(imp)
    }


def test_core_imports_neither_the_web_framework_nor_the_worker():
    # `from aiohttp import web` is recorded as "aiohttp.web".
    above = ("aiohttp.web", "arq.worker", "service.web", "service.worker", "service.dev", "service.cli")
    assert _breaking("service.core", lambda imp: any(_within(imp, p) for p in above)) == set()


def test_worker_stands_on_the_core_alone():
    allowed = ("service.core", "service.settings", "service.worker")
    assert (
        _breaking(
            "service.worker",
            lambda imp: _within(imp, "service") and not any(_within(imp, a) for a in allowed),
        )
        == set()
    )


def test_web_never_imports_worker_or_dev_code():
    beside = ("service.worker", "service.dev", "service.cli")
    assert _breaking("service.web", lambda imp: any(_within(imp, p) for p in beside)) == set()


def test_no_import_circles():
    graph = {
        mod: {target for imp in imports if (target := _owner(imp)) is not None and target != mod}
        for mod, imports in MODULES.items()
    }
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert circles == []


def _owner(imported: str) -> str | None:
    """The service module an import refers to (``from service.core import jobs`` is service.core.jobs;
    a package's ``__init__`` does not count as a dependency of its modules)."""
    while imported:
        if (imported in MODULES and imported.count(".") > 1) or imported in (
            "service.settings",
            "service.cli",
        ):
            return imported
        imported = imported.rpartition(".")[0]
    return None


def test_every_package_says_what_it_owns_and_may_import():
    for init in ROOT.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init} needs a docstring: what the package owns and what it may import"


# An SQL statement in a string: a keyword that starts one, in capitals, followed by what follows it.
SQL_STATEMENT = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS\s*\(|COPY\s*\()"
)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_sql_under_the_web_layer():
    """Every statement lives in the core: the web side parses, calls a core function, replies."""
    web = ROOT / "web"
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted(web.rglob("*.py"))
        for line, text in _string_literals(path)
        if SQL_STATEMENT.search(text)
    ]
    assert found == []


def test_the_sql_rule_sees_sql():
    assert SQL_STATEMENT.search("SELECT id FROM users WHERE username = $1")
    assert SQL_STATEMENT.search("UPDATE jobs SET status = 'DELETED'")
    assert not SQL_STATEMENT.search("Select the file to upload")


def test_the_console_never_calls_api_handlers():
    """Both faces call the core's use-cases; neither calls the other."""
    assert _breaking("service.web.console", lambda imp: _within(imp, "service.web.handlers")) == set()
    assert _breaking("service.web.handlers", lambda imp: _within(imp, "service.web.console")) == set()


def test_nothing_below_the_launchers_imports_them():
    """service.launch starts the web app, the workers and the embedded servers; nothing it starts
    imports it back."""
    below = ("service.core", "service.web", "service.worker", "service.dev")
    for package in below:
        assert _breaking(package, lambda imp: _within(imp, "service.launch")) == set()


def test_no_import_aliases():
    """A module is called by its own name everywhere (``datetime as dt`` is the one idiom kept)."""
    kept = {("datetime", "dt")}
    found = set()
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.asname and (alias.name, alias.asname) not in kept:
                        found.add(f"{path.relative_to(ROOT)}: {alias.name} as {alias.asname}")
    assert found == set()
