"""The house rules, checked: ruff, mypy --strict, and the stages' independence."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _imports_of(path: Path, depth: int = 1) -> set[str]:
    """The absolute imports of one module, cut to their first `depth` name parts."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(".".join(a.name.split(".")[:depth]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(".".join(node.module.split(".")[:depth]))
    return names


def _imports(package: str, depth: int = 1) -> set[str]:
    """The absolute imports of a folder's modules, cut to their first `depth` name parts."""
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        if ".cache" not in path.parts:  # peer tools' sample data, not ours
            names |= _imports_of(path, depth)
    return names


def test_ruff_clean() -> None:
    proc = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stages_do_not_import_each_other() -> None:
    assert "portsentinel.responder" not in _imports("detector", 2)
    assert "portsentinel.detector" not in _imports("responder", 2)


def test_common_imports_neither_stage() -> None:
    assert not {"portsentinel.detector", "portsentinel.responder", "portsentinel.client"} & _imports(
        "portsentinel/common", 2)


def test_systemd_has_two_doors() -> None:
    """python-systemd is untyped: journald writing goes through portsentinel.common.systemd, reading through the
    shared journal reader (portsentinel.common.journal: the responder's journal source and the fleet daemon); nothing
    else imports it."""
    importers = set()
    for folder in ("detector", "responder", "portsentinel"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "portsentinel" / "detector") or path.is_relative_to(
                    ROOT / "portsentinel" / "responder"):
                continue  # the symlinks to the stages' folders
            if "systemd" in _imports_of(path):
                importers.add(str(path.relative_to(ROOT)))
    assert importers == {"portsentinel/common/systemd.py", "portsentinel/common/journal.py"}


def test_one_import_namespace() -> None:
    """Our code imports itself only as `portsentinel.*`: no top-level detector, responder or psrecord."""
    for folder in ("detector", "responder", "portsentinel", "tests", "bench"):
        assert not {"detector", "responder", "psrecord"} & _imports(folder), folder


def test_only_adapters_do_io() -> None:
    """sockets, subprocess, sqlite, systemd, pyinotify and smtplib stay in adapters/, service.py and cli.py."""
    io_modules = {"socket", "subprocess", "sqlite3", "systemd", "pyinotify", "smtplib"}
    allowed = {"service.py", "cli.py"}
    offenders = []
    for package in ("detector", "responder"):
        for path in (ROOT / package).rglob("*.py"):
            if "adapters" in path.parts or path.name in allowed:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                mods = []
                if isinstance(node, ast.Import):
                    mods = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    mods = [node.module.split(".")[0]]
                offenders += [f"{path.relative_to(ROOT)}: {m}" for m in mods if m in io_modules]
    assert offenders == []


def _module_graph() -> dict[str, set[str]]:
    """portsentinel's modules → the portsentinel modules each imports (anywhere in it, lazily or not)."""
    files: dict[str, Path] = {}
    for path in (ROOT / "portsentinel").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for stage in ("detector", "responder"):  # the stages' folders, behind the symlinks
        for path in (ROOT / stage).rglob("*.py"):
            parts = ["portsentinel", *path.relative_to(ROOT).with_suffix("").parts]
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    deps.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in files else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def test_no_import_circles() -> None:
    graph = _module_graph()
    assert "portsentinel.responder.service" in graph and "portsentinel.detector.service" in graph
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []



#: Where the project's modules live (portsentinel/detector and portsentinel/responder are links to two of them).
SOURCE_FOLDERS = ("portsentinel", "detector", "responder", "bench", "tests")
MAX_LINES = 450


def _modules() -> list[Path]:
    """Every module of SOURCE_FOLDERS once, without peer tools' unpacked sources and other generated data
    (hidden folders such as tests/.cache, __pycache__)."""
    seen: dict[Path, Path] = {}
    for folder in SOURCE_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            seen.setdefault(path.resolve(), rel)
    return sorted(seen.values())


def test_no_module_over_450_lines() -> None:
    """Small modules with one job (issue 12): no module of the project is over 450 lines."""
    modules = _modules()
    assert ROOT / "responder" / "service.py" in [ROOT / m for m in modules]  # the walk finds the stages' folders
    big = {str(m): n for m in modules if (n := len((ROOT / m).read_text().splitlines())) > MAX_LINES}
    assert big == {}, f"over {MAX_LINES} lines (split by job): {big}"
