#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, torch, numba-cuda and sympy (python3), from a plain checkout
# (symdl need not be pip installed): the cuda tests on the real GPU, then benchmarks/gpu.py and
# benchmarks/gpu_train.py.
# Logs go to $OUT/ when OUT is set, else to a temporary folder (printed at the end). Meant to finish in under 7 minutes.
#
#   bash benchmarks/gpu_check.sh [--quick]        # --quick: fewer benchmark sizes
#
# symdl.formulas: pyproject maps the package symdl.formulas to the folder formulas/, which only an
# install applies; without one this script links symdl/formulas -> ../formulas for the run and
# removes the link on exit (nothing else in the checkout changes).
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS="${OUT:-$(mktemp -d)}"
mkdir -p "$LOGS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SYMDL_CACHE_DIR="${SYMDL_CACHE_DIR:-$(mktemp -d)}"
unset NUMBA_ENABLE_CUDASIM
LINKED=0
if ! python3 -c "import symdl.formulas" 2>/dev/null; then
    ln -s ../formulas symdl/formulas && LINKED=1
fi
cleanup() { if [ "$LINKED" = 1 ]; then rm -f symdl/formulas; fi; }
trap cleanup EXIT
# numba-cuda 0.30.4 registers np.row_stack, which NumPy 2.5 removed (seen on the H200 image,
# 2026-11: numpy 2.5.2): every kernel compile then fails. Alias it for this run's processes only.
if ! python3 -c "import numpy; numpy.row_stack" 2>/dev/null; then
    SHIM="$(mktemp -d)"
    printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > "$SHIM/sitecustomize.py"
    export PYTHONPATH="$SHIM:$PYTHONPATH"
    echo "numpy without row_stack: aliased to vstack for numba-cuda (sitecustomize in $SHIM)"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$LOGS/gpu.txt"
python3 -c "import numba, numba_cuda, torch, sympy; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__, 'sympy', sympy.__version__)" 2>&1 | tee -a "$LOGS/gpu.txt"

# the tests compile a few hundred kernels: spread them over the cores when pytest-xdist is there
PAR=()
if python3 -c "import xdist" 2>/dev/null; then PAR=(-n "$(( $(nproc) < 8 ? $(nproc) : 8 ))"); fi
start=$(date +%s)
timeout 240 python3 -m pytest -q -p no:cacheprovider "${PAR[@]}" tests_cuda --ignore=tests_cuda/test_ptx.py \
    2>&1 | tee "$LOGS/tests_cuda.log" | tail -25
tests=${PIPESTATUS[0]}
echo "tests_cuda on the GPU: exit $tests, $(( $(date +%s) - start )) s" | tee -a "$LOGS/tests_cuda.log"

timeout 200 python3 benchmarks/gpu.py "$@" 2>&1 | tee "$LOGS/gpu_bench.log"
bench=${PIPESTATUS[0]}
# one training epoch: symdl.nn on cuda vs cpu vs torch (MLP and small CNN, < 90 s)
timeout 120 python3 benchmarks/gpu_train.py 2>&1 | tee "$LOGS/gpu_train.log"
train=${PIPESTATUS[0]}
echo "benchmarks: exit $bench, training benchmark: exit $train; logs in $LOGS"
exit $(( tests != 0 ? tests : bench != 0 ? bench : train ))
