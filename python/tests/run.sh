#!/bin/sh
# The Python suite, as `make test` and CI run it: install the package the README's way (pip install ./python,
# which builds libflashkit.so with CMake and bundles it) into a virtual environment in build-pyenv/, with
# pytest, NumPy, torch (CPU use; PyPI's Linux wheel is the CUDA build, ~4 GB with its nvidia-* wheels: PyPI
# has no CPU-only torch) and JAX (CPU), then run pytest. GPU tests in the same files skip without a GPU.
# Time from scratch (fresh clone, new venv, cold pip cache, 2-core build machine): see docs/PERF.md, "Python
# binding".
#   FLASHKIT_CUDA=AUTO|ON|OFF  CUDA in the package's library (default: AUTO when a GPU is visible, else OFF,
#                              since CI has no GPU and compiles the CUDA sources in its own build already)
#   PYTHON=python3.x           interpreter to use
# Prints "skipped: ..." and exits 0 only when Python, pytest or NumPy cannot be had at all.
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VENV=build-pyenv
skip() { echo "skipped: python tests: $*"; exit 0; }

command -v "$PY" >/dev/null 2>&1 || skip "no $PY on PATH"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV" >/dev/null 2>&1 || skip "cannot create a virtual environment ($PY -m venv failed; install python3-venv)"
fi
VPY=$VENV/bin/python
PIP="$VPY -m pip -q --disable-pip-version-check"

"$VPY" -c "import pytest, numpy" 2>/dev/null || $PIP install pytest numpy || skip "pytest and numpy could not be installed"
if ! "$VPY" -c "import torch" 2>/dev/null; then
  echo "python tests: installing torch (first run only; takes a few minutes)"
  $PIP install torch || echo "skipped: torch tests (torch could not be installed); the NumPy tests still run"
fi
# JAX on the CPU covers the DLPack path that CuPy takes on a GPU (jax + jaxlib: ~100 MB, seconds).
if ! "$VPY" -c "import jax" 2>/dev/null; then
  $PIP install jax || echo "skipped: jax tests (jax could not be installed)"
fi

if [ -z "${FLASHKIT_CUDA:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then FLASHKIT_CUDA=AUTO; else FLASHKIT_CUDA=OFF; fi
fi
export FLASHKIT_CUDA
echo "python tests: pip install ./python (FLASHKIT_CUDA=$FLASHKIT_CUDA)"
$PIP install ./python || $PIP install --no-build-isolation ./python

# From the repository root, so the source folder python/flashkit (no bundled library) cannot shadow the
# installed package.
exec "$VPY" -m pytest -q -rs -p no:cacheprovider python/tests
