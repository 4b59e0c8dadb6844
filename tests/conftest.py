"""Shared test setup: every test session compiles into its own, throw-away kernel cache."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Set at import time, before any symdl kernel is built, so tests never read or write the user's
# ~/.cache/symdl (a stale or foreign cache there must not decide a test's outcome). An explicit
# SYMDL_CACHE_DIR from the environment wins.
_session_cache = tempfile.mkdtemp(prefix="symdl-test-cache-")
if os.environ.setdefault("SYMDL_CACHE_DIR", _session_cache) == _session_cache:
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)
else:
    os.rmdir(_session_cache)

# No compile-ahead helper (runtime/ahead.py) unless a test asks for one: on the 2 cores that two
# xdist workers already fill, a forked helper only competes with them (the nn tests took 15-20%
# longer with helpers). tests/test_compile_ahead.py and test_parallel_twins.py set it themselves.
os.environ.setdefault("SYMDL_COMPILE_AHEAD", "0")



@pytest.fixture(autouse=True)
def _own_shared_functions(monkeypatch):
    """Each test starts with no generated function shared from another test's modules
    (backends/cpu/shared.py): what it counts of its own modules' dispatchers (signatures, compiles,
    numba's index files) is what a fresh process would see. Within a test modules share as usual."""
    from symdl.backends.cpu import shared
    monkeypatch.setattr(shared, "_FUNCTIONS", {})
