"""The images run the code the tests ran: the torch of constraints.txt (the one pin `make` reads
too), the project's Python, and a C compiler in the GPU worker for torch.compile (Triton,
inductor)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"api": ROOT / "docker/api.Dockerfile", "worker": ROOT / "docker/worker.Dockerfile"}
COMPILER_PACKAGES = {"gcc", "build-essential", "clang"}


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[name.strip()] = version.strip()
    return found


def dockerfile_problems(text: str, *, needs_compiler: bool) -> list[str]:
    """What keeps an image from running what `make test` runs; empty when nothing does."""
    problems = []
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = re.search(r"^FROM\s+(\S+)", text, re.M)
    image = base.group(1) if base else ""
    if not re.fullmatch(rf"python:{re.escape(python)}(?:[.\d]*)(?:-[\w.-]+)?", image):
        problems.append(f"base image {image!r} is not the project's Python {python}")
    if "COPY constraints.txt" not in text:
        problems.append("constraints.txt is not copied into the image")
    installs = re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", text)
    if not installs:
        problems.append("no pip install")
    for line in installs:
        if "-c constraints.txt" not in line:
            problems.append(f"a pip install without -c constraints.txt: {line.strip()!r}")
        if re.search(r"torch(?:vision)?\s*[<>=~!]", line):
            problems.append(f"a torch version written outside constraints.txt: {line.strip()!r}")
    apt = " ".join(re.findall(r"apt-get install[^\n]*(?:\\\n[^\n]*)*", text)).split()
    if needs_compiler and not (COMPILER_PACKAGES & set(apt) or "-devel" in image):
        problems.append(
            "no C compiler (torch.compile builds Triton's launcher and inductor kernels)"
        )
    return problems


def test_the_tests_run_the_pinned_torch() -> None:
    pinned = pins()
    assert torch.__version__.split("+")[0] == pinned["torch"], "make install-dev: reinstall"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_range = next(d for d in project["dependencies"] if d.startswith("torch>"))
    assert pinned["torch"] in SpecifierSet(torch_range.removeprefix("torch"))
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in SpecifierSet(
        project["requires-python"]
    )


def test_make_installs_with_the_pins() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install -q[^\n]*-e[^\n]*", makefile)
    assert len(installs) == 2 and all("-c constraints.txt" in line for line in installs)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_the_image_runs_what_the_tests_run(name: str) -> None:
    text = DOCKERFILES[name].read_text()
    assert dockerfile_problems(text, needs_compiler=name == "worker") == []


def test_the_check_refuses_the_old_runtime_worker_image() -> None:
    old = """FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
COPY pyproject.toml README.md alembic.ini ./
RUN pip install -e .
"""
    problems = dockerfile_problems(old, needs_compiler=True)
    assert any("base image" in p for p in problems)
    assert any("no C compiler" in p for p in problems)
    assert any("without -c constraints.txt" in p for p in problems)
    unpinned = "FROM python:3.11-slim\nCOPY constraints.txt ./\n" + (
        'RUN pip install -c constraints.txt "torch>=2.4"\n'
    )
    assert any(
        "outside constraints.txt" in p for p in dockerfile_problems(unpinned, needs_compiler=False)
    )
