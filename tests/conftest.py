"""Shared fixtures. Expensive things (Ray cluster, vLLM engines, the toy world) are
session-scoped so the suite starts each once."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption(
        "--data-dir",
        default=str(REPO_ROOT.parent / "shared" / "data"),
        help="directory with flores200/ and ntrex128/ (real parallel data for tests)",
    )


@pytest.fixture(scope="session")
def data_dir(request) -> Path:
    path = Path(request.config.getoption("--data-dir"))
    if not (path / "flores200").is_dir():
        pytest.fail(f"--data-dir {path} has no flores200/; pass --data-dir pointing at the shared data")
    return path
