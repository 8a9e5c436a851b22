"""The direction of imports: sagan_core -> nothing of the service; store -> neither api nor worker;
api -> no worker; only sagan_cli (the composition root) wires them all together."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE_LIBRARIES = {
    "fastapi", "starlette", "celery", "kombu", "redis", "sqlalchemy", "alembic", "psycopg",
    "boto3", "botocore", "pydantic", "pydantic_settings", "uvicorn", "typer", "httpx",
}  # fmt: skip
FORBIDDEN = {
    "sagan_core": {"api", "worker", "store", "sweeps", "sagan_cli", "optuna"} | SERVICE_LIBRARIES,
    "store": {"api", "worker", "sweeps", "sagan_cli"},
    "sweeps": {"api", "worker", "sagan_cli"},
    "api": {"worker", "sagan_cli"},
    "worker": {"api", "sagan_cli"},
}


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level names of every import in a file, lazy ones inside functions included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(package if node.level else (node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_in_the_allowed_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in imported_packages(path, package) & FORBIDDEN[package]
    }
    assert not wrong, "\n".join(sorted(wrong))


def test_the_core_loads_without_any_service_package() -> None:
    forbidden = set(FORBIDDEN["sagan_core"])
    code = (
        "import sys, sagan_core.trainer, sagan_core.evaluate, sagan_core.cli, sagan_core.bench, "
        "sagan_core.bench.train, sagan_core.bench.evaluation, sagan_core.run_dir, "
        "sagan_core.classes\n"
        f"print(sorted({forbidden!r} & {{m.split('.')[0] for m in sys.modules}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_import_circle_inside_a_package() -> None:
    """Lazy imports count (a lazy import is for a heavy dependency, never to hide a circle); the
    graph and its checker live in tests/test_house_rules.py."""
    from test_house_rules import circles, import_graph

    assert circles(import_graph()) == []


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from worker.tasks import train_job\n    import fastapi.routing\n")
    assert {"worker", "fastapi"} <= imported_packages(bad, "sagan_core")
