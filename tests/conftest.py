"""Shared fixtures: the memory presets the DRAM tests use and the reference data beside the repo.

``shared/`` (reference traces and DRAMsim3 outputs) sits next to the repository checkout, also
in CI; tests that need it are skipped when it is absent.
"""

from pathlib import Path

import pytest

from neupims_py.config import load_hw

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def hbm2_mem():
    """DRAMsim3's HBM2_8Gb_x128: 8 channels, 1 rank, 16 banks, dual command issue."""
    return load_hw("hbm2-8gb-x128").memory


@pytest.fixture(scope="session")
def neupims_mem():
    """The NeuPIMs artifact memory: 32 channels, 2 ranks, command queues of 128."""
    return load_hw("neupims").memory
