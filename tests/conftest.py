"""Shared fixtures: where the real data is (integration tests skip with a reason without it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tests run beside each other on 2 cores; keep them from oversubscribing


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data (STUDY_DATA_DIR); integration tests skip with this reason when it is not set."""
    env = os.environ.get("STUDY_DATA_DIR")
    if not env:
        pytest.skip("STUDY_DATA_DIR is not set: integration test needs the real data")
    path = Path(env)
    if not (path / "covid").is_dir():
        pytest.skip(f"STUDY_DATA_DIR={env} has no covid/ folder")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
