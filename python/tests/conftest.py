"""Frameworks under test: NumPy always; torch on the CPU when torch is installed; torch on CUDA when a GPU is
present (skipped otherwise); CuPy and JAX when installed."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

try:
    import torch
except ImportError:  # the NumPy path must work without torch
    torch = None

HAS_CUDA = torch is not None and torch.cuda.is_available()


class Framework:
    def __init__(self, name):
        self.name = name
        self.torch = name.startswith("torch")
        self.device = "cuda" if name in ("torch-cuda", "cupy") else "cpu"

    def __repr__(self):
        return self.name

    def arr(self, a, requires_grad=False):
        if self.name == "numpy":
            return np.ascontiguousarray(a)
        if self.name == "cupy":
            import cupy

            return cupy.asarray(a)
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(a)
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return t.requires_grad_(requires_grad)

    def np(self, x):
        if x is None:
            return None
        if self.torch:
            return x.detach().cpu().numpy()
        if self.name == "cupy":
            return x.get()
        return np.asarray(x)

    def check_kind(self, x):
        if self.torch:
            assert isinstance(x, torch.Tensor) and x.device.type == self.device
        elif self.name == "numpy":
            assert isinstance(x, np.ndarray)
        elif self.name == "cupy":
            import cupy

            assert isinstance(x, cupy.ndarray)
        elif self.name == "jax":
            import jax

            assert isinstance(x, jax.Array)


def _have(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def _cupy_gpu():
    if not _have("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _fw_params():
    out = [pytest.param(Framework("numpy"), id="numpy")]
    out.append(pytest.param(Framework("torch"), id="torch",
                            marks=pytest.mark.skipif(torch is None, reason="torch not installed")))
    out.append(pytest.param(Framework("torch-cuda"), id="torch-cuda",
                            marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")))
    out.append(pytest.param(Framework("cupy"), id="cupy",
                            marks=pytest.mark.skipif(not _cupy_gpu(), reason="cupy or a GPU missing")))
    out.append(pytest.param(Framework("jax"), id="jax",
                            marks=pytest.mark.skipif(not _have("jax"), reason="jax not installed")))
    return out


if _have("jax"):
    import jax

    jax.config.update("jax_enable_x64", True)  # else float64 inputs silently become float32

FRAMEWORKS = _fw_params()


@pytest.fixture(params=FRAMEWORKS)
def fw(request):
    return request.param


# torch.autograd.gradcheck's defaults (atol 1e-5, rtol 1e-3) pass a gradient that is 0.1 % off. The CPU
# computes fp64 end to end, so central differences (eps 1e-6) agree to ~1e-9: these catch a 1e-4 error.
GRADCHECK_TOL = {"atol": 1e-8, "rtol": 1e-6}


def rng(seed):
    return np.random.default_rng(seed)


def randn(r, *shape, dtype=np.float32):
    return r.standard_normal(shape).astype(dtype)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a GPU framework, a NotImplementedError from the library (an op or direction the CUDA backend does not
    have yet) is reported as a skip with the library's message, not as a failure."""
    outcome = yield
    rep = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    fw = params.get("fw")
    if (call.when == "call" and rep.failed and call.excinfo is not None and fw is not None
            and fw.device == "cuda" and call.excinfo.errisinstance(NotImplementedError)):
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"not on CUDA yet: {call.excinfo.value}")
