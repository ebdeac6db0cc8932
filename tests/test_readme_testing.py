"""The README's "Testing your app" example runs as pasted, under each async plugin it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._docs import page, python_blocks

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 60.0  # seconds: a pytest run in a fresh process


def readme_block(*containing: str) -> str:
    """The ``python`` code block of ``docs/testing.md`` that contains each of ``containing``."""
    blocks = python_blocks(page("testing.md"))
    [block] = [block for block in blocks if all(text in block for text in containing)]
    return str(block)


def run_pytest(tmp_path: Path, source: str, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_readme_example.py").write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAFAST_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options, "-q"],
        cwd=tmp_path,  # no ini file there: the plugins' own defaults, as in a new project
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


EXAMPLE = "async def test_signup_records_a_goal"


def test_the_pytest_asyncio_example_passes_as_pasted_in_strict_mode(tmp_path: Path) -> None:
    source = readme_block("@pytest.mark.asyncio", EXAMPLE)
    result = run_pytest(tmp_path, source, "-o", "asyncio_mode=strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout


@pytest.mark.parametrize(
    "plugins",
    [
        pytest.param(["-p", "no:asyncio"], id="anyio-alone"),
        pytest.param(["-o", "asyncio_mode=strict"], id="beside-pytest-asyncio"),
    ],
)
def test_the_anyio_example_passes_as_pasted(tmp_path: Path, plugins: list[str]) -> None:
    source = readme_block("@pytest.mark.anyio", EXAMPLE)
    assert "pytest.mark.asyncio" not in source
    result = run_pytest(tmp_path, source, *plugins)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout
