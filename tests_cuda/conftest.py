"""The cuda backend's tests, in their own pytest processes (CI: .ci/run):

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests_cuda --ignore=tests_cuda/test_ptx.py
    python -m pytest -q tests_cuda/test_ptx.py         # PTX type checks: no simulator, no GPU needed

On a machine with a GPU, `python -m pytest -q tests_cuda --ignore=tests_cuda/test_ptx.py` runs the same
tests on the device. The simulator must be chosen before numba is imported, so this file checks
and refuses rather than setting it.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
PTX_FILE = "test_ptx.py"


def _gpu() -> bool:
    from numba import cuda
    try:
        return bool(cuda.is_available())
    except Exception:  # no driver: numba-cuda raises on some setups instead of answering False
        return False


def pytest_collection_modifyitems(config, items):
    device_tests = [it for it in items if it.path.name != PTX_FILE]
    if not device_tests:
        return  # PTX checks need neither a GPU nor the simulator
    if importlib.util.find_spec("numba_cuda") is None:
        raise pytest.UsageError("tests_cuda needs numba-cuda: pip install 'symdl[cuda]'")
    if not SIMULATOR and not _gpu():
        raise pytest.UsageError(
            "tests_cuda: no GPU here and the CUDA simulator is off. Run them under the simulator:\n"
            "    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests_cuda --ignore=tests_cuda/test_ptx.py\n"
            "(the variable must be set before numba is imported), and the PTX checks on their own:\n"
            "    python -m pytest -q tests_cuda/test_ptx.py")
