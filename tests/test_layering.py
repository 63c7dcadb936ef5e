"""Which package may import which: the load tests reach the system only through the wire contract, the
launcher and `loadtests.invariants`, `server` never imports the load tests, and no package below `server` imports
it (read from the source with `ast`, so an import inside a function counts too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"server", "storage", "handlers", "realtime", "jobs", "core", "contract", "loadtests", "tests"}
# what the load tests may take from the server side: the launcher of services and local clusters
LAUNCHER = {
    "server.cluster": {"LocalCluster", "ClusterError", "cluster_services", "LOAD_TEST_LIMITS"},
    "server.embedded": {"EmbeddedStack", "EmbeddedKafka", "free_port", "stop_group"},
}


def imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, name) for every absolute import in the file; name is None for `import module`."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def python_files(root: Path, package: str) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def loadtests_violations(root: Path) -> list[str]:
    """Imports of our own code from loadtests/ other than loadtests itself and the launcher's public names."""
    found = []
    for path in python_files(root, "loadtests"):
        for line, module, name in imports(path):
            top = module.split(".")[0]
            if top not in OURS or top == "loadtests":
                continue
            if name is not None and name in LAUNCHER.get(module, set()):
                continue
            found.append(f"{path.relative_to(root)}:{line}: {module}" + (f".{name}" if name else ""))
    return found


def invariants_violations(root: Path) -> list[str]:
    """loadtests/invariants.py judges a database with plain SQL: it imports nothing of ours at all."""
    path = root / "loadtests" / "invariants.py"
    return [f"{path.relative_to(root)}:{line}: {module}" for line, module, _ in imports(path)
            if module.split(".")[0] in OURS]


def server_violations(root: Path) -> list[str]:
    return [f"{path.relative_to(root)}:{line}: {module}" for path in python_files(root, "server")
            for line, module, _ in imports(path) if module.split(".")[0] == "loadtests"]


# the packages below `server`: the app factory assembles them, so none of them may import it (the app keys they
# read live in core.appkeys)
BELOW_SERVER = ("core", "storage", "contract", "handlers", "realtime", "jobs")


def below_server_violations(root: Path) -> list[str]:
    return [f"{path.relative_to(root)}:{line}: {module}" for package in BELOW_SERVER
            for path in python_files(root, package)
            for line, module, _ in imports(path) if module.split(".")[0] == "server"]


def test_the_load_tests_import_only_the_launcher_of_the_server_side() -> None:
    assert loadtests_violations(ROOT) == []


def test_the_invariant_checker_imports_nothing_of_ours() -> None:
    assert invariants_violations(ROOT) == []


def test_the_server_never_imports_the_load_tests() -> None:
    assert server_violations(ROOT) == []


def test_no_package_below_the_server_imports_it() -> None:
    assert below_server_violations(ROOT) == []


def test_the_rules_catch_the_imports_they_forbid(tmp_path: Path) -> None:
    (tmp_path / "loadtests").mkdir()
    (tmp_path / "server").mkdir()
    (tmp_path / "loadtests" / "invariants.py").write_text("import asyncpg\nfrom storage.ids import new_id\n")
    (tmp_path / "loadtests" / "runner.py").write_text(
        "from loadtests.plan import Plan\nfrom server.cluster import LocalCluster\n"
        "def late():\n    from server.cli import services\n    import handlers.schemas\n")
    (tmp_path / "server" / "cli.py").write_text("def rush():\n    from loadtests.rush import main\n")
    assert loadtests_violations(tmp_path) == ["loadtests/invariants.py:2: storage.ids.new_id",
                                              "loadtests/runner.py:4: server.cli.services",
                                              "loadtests/runner.py:5: handlers.schemas"]
    assert invariants_violations(tmp_path) == ["loadtests/invariants.py:2: storage.ids"]
    assert server_violations(tmp_path) == ["server/cli.py:2: loadtests.rush"]
    for package in ("handlers", "realtime", "contract"):
        (tmp_path / package).mkdir()
    (tmp_path / "handlers" / "ops.py").write_text("from core.appkeys import PG_POOL\n"
                                                  "from server.typedefs import REDIS\n")
    (tmp_path / "realtime" / "hub.py").write_text("def late():\n    import server.app\n")
    (tmp_path / "contract" / "shapes.py").write_text("from server import middlewares\n")
    assert below_server_violations(tmp_path) == ["contract/shapes.py:1: server", "handlers/ops.py:2: server.typedefs",
                                                 "realtime/hub.py:2: server.app"]


def test_boxoffice_finds_the_rush_command_through_its_entry_point() -> None:
    """`boxoffice --help` lists rush, and building the CLI imports no load-test module beyond the registration."""
    script = ("import sys, server.cli as cli\n"
              "cli.build_parser()\n"
              "print(sorted(m for m in sys.modules if m.startswith('loadtests')))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = set(ast.literal_eval(proc.stdout))
    assert "loadtests.rush.cli" in loaded
    assert not loaded & {"loadtests.rush.run", "loadtests.locustfile", "loadtests.locust_base",
                         "loadtests.locust_hooks", "loadtests.invariants"}
    help_text = subprocess.run([sys.executable, "-m", "server.cli", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    assert "rush" in help_text
