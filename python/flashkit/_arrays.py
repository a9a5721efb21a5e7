"""Array frameworks: how to read a pointer/shape/strides from each kind of array, allocate outputs of the
caller's kind on the caller's device, and find the caller's CUDA stream.

Backends are torch, NumPy and CuPy (read directly: no DLPack round trip on the hot path). JAX and any other
object with `__dlpack__` are unwrapped through DLPack into one of those three and the results are wrapped
back into the caller's kind (see `unwrap`).
"""
import sys

from . import _lib
from ._lib import BF16, DEVICE_CPU, DEVICE_CUDA, F16, F32, F64, INT32, INT64

BYTES = -1  # pseudo dtype code for workspaces (uint8)

_DT_NAMES = {F32: "float32", F16: "float16", BF16: "bfloat16", F64: "float64", INT32: "int32", INT64: "int64",
             BYTES: "uint8"}


class TorchBackend:
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.codes = {torch.float32: F32, torch.float16: F16, torch.bfloat16: BF16, torch.float64: F64,
                      torch.int32: INT32, torch.int64: INT64}
        self.dtypes = {c: getattr(torch, n) for c, n in _DT_NAMES.items()}

    def owns(self, x):
        return isinstance(x, self.torch.Tensor)

    def describe(self, x, what):
        code = self.codes.get(x.dtype)
        if code is None:
            raise _unsupported_dtype(what, x.dtype)
        dev = x.device
        if dev.type == "cpu":
            dk, di = DEVICE_CPU, 0
        elif dev.type == "cuda":
            dk, di = DEVICE_CUDA, dev.index if dev.index is not None else self.torch.cuda.current_device()
        else:
            raise _lib.FlashkitNotSupportedError(_lib.STATUS_NOT_SUPPORTED, "not supported",
                                                 f"{what}: torch device '{dev.type}' is not supported "
                                                 "(flashkit runs on the CPU and on CUDA)")
        return x.data_ptr(), code, dk, di, tuple(x.shape), x.stride()

    def empty(self, shape, code, like):
        return self.torch.empty(shape, dtype=self.dtypes[code], device=like.device)

    def stream(self, like):
        if like.device.type != "cuda":
            return None
        return self.torch.cuda.current_stream(like.device).cuda_stream

    def dense(self, x):
        return x if _dense_ok(x.shape, x.stride()) else x.contiguous()

    def astype(self, x, code):
        return x.to(self.dtypes[code])

    def asarray(self, x, code, like):
        if isinstance(x, self.torch.Tensor):
            return x.to(device=like.device, dtype=self.dtypes[code])
        return self.torch.as_tensor(x, dtype=self.dtypes[code], device=like.device)

    def arange(self, n, like):
        return self.torch.arange(n, dtype=self.torch.int64, device=like.device)

    def searchsorted_right(self, sorted_seq, values):
        return self.torch.searchsorted(sorted_seq.to(self.torch.int64), values, right=True)


class NumpyBackend:
    name = "numpy"

    def __init__(self):
        import numpy as np

        self.np = np
        self.codes = {np.dtype(np.float32): F32, np.dtype(np.float16): F16, np.dtype(np.float64): F64,
                      np.dtype(np.int32): INT32, np.dtype(np.int64): INT64}
        self.dtypes = {c: np.dtype(n) for c, n in _DT_NAMES.items() if n != "bfloat16"}
        try:  # NumPy has no bfloat16; ml_dtypes (a JAX dependency) adds one
            import ml_dtypes

            self.codes[np.dtype(ml_dtypes.bfloat16)] = BF16
            self.dtypes[BF16] = np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            pass

    def owns(self, x):
        return isinstance(x, self.np.ndarray)

    def describe(self, x, what):
        code = self.codes.get(x.dtype)
        if code is None:
            raise _unsupported_dtype(what, x.dtype)
        item = x.itemsize
        byte_strides = x.strides
        strides = tuple([s // item for s in byte_strides])
        if [s * item for s in strides] != list(byte_strides):
            raise _lib.FlashkitValueError(_lib.STATUS_BAD_PARAM, "bad parameter",
                                          f"{what}: byte strides {byte_strides} are not multiples of the item size")
        return x.__array_interface__["data"][0], code, DEVICE_CPU, 0, x.shape, strides

    def empty(self, shape, code, like):
        return self.np.empty(shape, dtype=self.dtypes[code])

    def stream(self, like):
        return None

    def dense(self, x):
        item = x.itemsize
        if _dense_ok(x.shape, tuple(s // item for s in x.strides)) and x.strides[-1] == item:
            return x
        return self.np.ascontiguousarray(x)

    def astype(self, x, code):
        return x.astype(self.dtypes[code], copy=False)

    def asarray(self, x, code, like):
        return self.np.asarray(x, dtype=self.dtypes[code])

    def arange(self, n, like):
        return self.np.arange(n, dtype=self.np.int64)

    def searchsorted_right(self, sorted_seq, values):
        return self.np.searchsorted(sorted_seq, values, side="right").astype(self.np.int64)


class CupyBackend(NumpyBackend):
    name = "cupy"

    def __init__(self):
        import cupy as cp

        super().__init__()
        self.cp = cp

    def owns(self, x):
        return isinstance(x, self.cp.ndarray)

    def describe(self, x, what):
        code = self.codes.get(x.dtype)
        if code is None:
            raise _unsupported_dtype(what, x.dtype)
        item = x.itemsize
        return x.data.ptr, code, DEVICE_CUDA, x.device.id, x.shape, tuple(s // item for s in x.strides)

    def empty(self, shape, code, like):
        with like.device:
            return self.cp.empty(shape, dtype=self.dtypes[code])

    def stream(self, like):
        return self.cp.cuda.get_current_stream().ptr or None

    def dense(self, x):
        item = x.itemsize
        if _dense_ok(x.shape, tuple(s // item for s in x.strides)) and x.strides[-1] == item:
            return x
        return self.cp.ascontiguousarray(x)

    def asarray(self, x, code, like):
        with like.device:
            return self.cp.asarray(x, dtype=self.dtypes[code])

    def arange(self, n, like):
        with like.device:
            return self.cp.arange(n, dtype=self.cp.int64)

    def searchsorted_right(self, sorted_seq, values):
        return self.cp.searchsorted(sorted_seq, values, side="right").astype(self.cp.int64)


def _dense_ok(shape, strides):
    """Innermost stride 1 and no broadcast (0) strides on extents > 1: what every flashkit operand accepts."""
    if not shape:
        return True
    if shape[-1] > 1 and strides[-1] != 1:
        return False
    for n, s in zip(shape, strides):
        if n > 1 and s <= 0:
            return False
    return True


def _unsupported_dtype(what, dtype):
    return _lib.FlashkitNotSupportedError(_lib.STATUS_NOT_SUPPORTED, "not supported: dtype",
                                          f"{what}: dtype {dtype} is not supported (float32, float16, "
                                          "bfloat16, float64 on the CPU; int32/int64 for index arrays)")


_backends = {}


def _backend(name):
    be = _backends.get(name)
    if be is None:
        be = {"torch": TorchBackend, "numpy": NumpyBackend, "cupy": CupyBackend}[name]()
        _backends[name] = be
    return be


def _identity(x):
    return x


def unwrap(x, what="input"):
    """(backend, array the backend can read, function that turns a result back into the caller's kind)."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        return _backend("torch"), x, _identity
    if mod.startswith("numpy"):
        return _backend("numpy"), x, _identity
    if mod.startswith("cupy"):
        return _backend("cupy"), x, _identity
    if mod.startswith("jax") or mod.startswith("jaxlib"):
        return _unwrap_jax(x)
    if hasattr(x, "__dlpack__"):
        return _unwrap_dlpack(x, what)
    if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
        import numpy as np

        return _backend("numpy"), np.asarray(x), _identity
    raise TypeError(f"flashkit: {what} must be an array (torch, NumPy, CuPy, JAX or any DLPack-capable array), "
                    f"got {type(x).__name__}")


def _on_cuda_dlpack(x):
    dev = x.__dlpack_device__()
    return int(dev[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def _gpu_backend_from_dlpack(x):
    if "torch" in sys.modules or _importable("torch"):
        import torch

        return _backend("torch"), torch.from_dlpack(x)
    if _importable("cupy"):
        import cupy

        return _backend("cupy"), cupy.from_dlpack(x)
    raise ImportError("flashkit: GPU arrays from this framework need torch or cupy installed (to allocate outputs)")


def _unwrap_jax(x):
    import jax.dlpack

    if _on_cuda_dlpack(x):
        be, arr = _gpu_backend_from_dlpack(x)
    else:
        import numpy as np

        be, arr = _backend("numpy"), np.from_dlpack(x)
    return be, arr, _to_jax


def _to_jax(y):
    import jax
    import jax.dlpack

    if isinstance(y, _backend("numpy").np.ndarray):
        return jax.numpy.asarray(y)
    return jax.dlpack.from_dlpack(y)


def _unwrap_dlpack(x, what):
    if _on_cuda_dlpack(x):
        be, arr = _gpu_backend_from_dlpack(x)
        return be, arr, _identity
    import numpy as np

    return _backend("numpy"), np.from_dlpack(x), _identity


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def same_kind(be, x, what):
    """Bring an auxiliary operand (cu_seqlens, alibi slopes, cos/sin...) to the primary operand's backend."""
    if x is None or be.owns(x):
        return x
    be2, arr, _ = unwrap(x, what)
    if be2 is be:
        return arr
    raise TypeError(f"flashkit: {what} is a {be2.name} array but the main operand is a {be.name} array; "
                    "pass arrays of one framework")


_torch_ops_module = None


def torch_ops(x):
    """flashkit's torch custom-op module when x is a torch tensor, else None. Imports torch support lazily, so
    a NumPy-only program never imports torch; reads only a module global on later calls (torch.compile
    traces through it)."""
    global _torch_ops_module
    tops = _torch_ops_module
    if tops is not None:
        return tops if isinstance(x, tops.torch.Tensor) else None
    t = sys.modules.get("torch")
    if t is None or not isinstance(x, t.Tensor):
        return None
    from . import _torch_ops

    _torch_ops_module = _torch_ops
    return _torch_ops
