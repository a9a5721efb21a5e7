"""ctypes mirror of include/flashkit.h: the library handle, the structs, the prototypes, errors, contexts.

Everything here is a 1:1 transcription of the header. tests/test_abi.py compiles a tiny C program against the
header and checks every struct size and field offset below against it, so a header change that is not
mirrored here fails a test instead of corrupting memory.
"""
import ctypes
import os
import threading
from ctypes import POINTER, c_char_p, c_float, c_int, c_int64, c_size_t, c_uint, c_void_p

# --- constants (flashkit.h) ----------------------------------------------------------------------------

FK_MAX_DIMS = 4

F32, F16, BF16, INT32, INT64, F64 = 0, 1, 2, 3, 4, 5  # fk_dtype
DEVICE_CPU, DEVICE_CUDA = 1, 2  # fk_device_kind

STATUS_SUCCESS = 0
STATUS_BAD_PARAM = 1000
STATUS_NOT_SUPPORTED = 2000
STATUS_ENVIRONMENT = 3000
STATUS_INTERNAL = 4000


# --- structs -------------------------------------------------------------------------------------------

class fk_device(ctypes.Structure):
    _fields_ = [("kind", c_int), ("index", c_int)]


class fk_tensor(ctypes.Structure):
    _fields_ = [
        ("data", c_void_p),
        ("dtype", c_int),
        ("device", fk_device),
        ("ndim", c_int),
        ("shape", c_int64 * FK_MAX_DIMS),
        ("stride", c_int64 * FK_MAX_DIMS),
    ]


class fk_build_info(ctypes.Structure):
    _fields_ = [("cuda_compiled", c_int), ("openmp", c_int), ("cpu_simd", c_int), ("cuda_device_count", c_int)]


class fk_device_props(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 128),
        ("cc_major", c_int),
        ("cc_minor", c_int),
        ("multiprocessors", c_int),
        ("memory_bytes", c_int64),
    ]


class fk_context_options(ctypes.Structure):
    _fields_ = [("num_threads", c_int)]


class fk_attn_args(ctypes.Structure):
    _fields_ = [
        ("q", fk_tensor), ("k", fk_tensor), ("v", fk_tensor), ("o", fk_tensor), ("lse", fk_tensor),
        ("do_", fk_tensor), ("dq", fk_tensor), ("dk", fk_tensor), ("dv", fk_tensor),
        ("cu_seqlens_q", fk_tensor),
        ("cu_seqlens_k", fk_tensor),
        ("max_seqlen_q", c_int64),
        ("max_seqlen_k", c_int64),
        ("alibi_slopes", fk_tensor),
        ("softmax_scale", c_float),
        ("softcap", c_float),
        ("causal", c_int),
        ("window_left", c_int64),
        ("window_right", c_int64),
        ("deterministic", c_int),
    ]


class fk_attn_kvcache_args(ctypes.Structure):
    _fields_ = [
        ("q", fk_tensor), ("k_cache", fk_tensor), ("v_cache", fk_tensor), ("k", fk_tensor), ("v", fk_tensor),
        ("o", fk_tensor), ("lse", fk_tensor),
        ("cache_seqlens", fk_tensor),
        ("cache_batch_idx", fk_tensor),
        ("block_table", fk_tensor),
        ("alibi_slopes", fk_tensor),
        ("softmax_scale", c_float),
        ("softcap", c_float),
        ("causal", c_int),
        ("window_left", c_int64),
        ("window_right", c_int64),
        ("num_splits", c_int),
    ]


class fk_rmsnorm_args(ctypes.Structure):
    _fields_ = [
        ("x", fk_tensor), ("residual", fk_tensor), ("residual_out", fk_tensor), ("weight", fk_tensor),
        ("y", fk_tensor), ("rstd", fk_tensor),
        ("dy", fk_tensor), ("dresidual_out", fk_tensor), ("dx", fk_tensor), ("dweight", fk_tensor),
        ("eps", c_float),
        ("weight_offset", c_float),
        ("deterministic", c_int),
    ]


class fk_rope_args(ctypes.Structure):
    _fields_ = [
        ("q", fk_tensor), ("k", fk_tensor), ("q_out", fk_tensor), ("k_out", fk_tensor),
        ("positions", fk_tensor),
        ("cos", fk_tensor), ("sin", fk_tensor),
        ("rotary_dim", c_int64),
        ("interleaved", c_int),
        ("pos_offset", c_int64),
        ("base", c_float),
    ]


class fk_swiglu_args(ctypes.Structure):
    _fields_ = [
        ("gate", fk_tensor), ("up", fk_tensor), ("out", fk_tensor),
        ("dout", fk_tensor), ("dgate", fk_tensor), ("dup", fk_tensor),
    ]


# Structs whose layout tests/test_abi.py checks against the C compiler's view of the header.
ABI_STRUCTS = {
    "fk_device": fk_device,
    "fk_tensor": fk_tensor,
    "fk_build_info": fk_build_info,
    "fk_device_props": fk_device_props,
    "fk_context_options": fk_context_options,
    "fk_attn_args": fk_attn_args,
    "fk_attn_kvcache_args": fk_attn_kvcache_args,
    "fk_rmsnorm_args": fk_rmsnorm_args,
    "fk_rope_args": fk_rope_args,
    "fk_swiglu_args": fk_swiglu_args,
}


# --- errors --------------------------------------------------------------------------------------------

class FlashkitError(RuntimeError):
    """A flashkit call failed. `status` is the fk_status code, `status_name` its static text; the message
    is the library's own sentence (fk_last_error_message), naming the argument at fault."""

    def __init__(self, status, status_name, message):
        self.status = int(status)
        self.status_name = status_name
        self.library_message = message
        super().__init__(f"{message} [{status_name}, status {int(status)}]" if message else
                         f"{status_name} [status {int(status)}]")


class FlashkitValueError(FlashkitError, ValueError):
    """The caller passed something wrong (status category 1000)."""


class FlashkitNotSupportedError(FlashkitError, NotImplementedError):
    """A valid call that this build or backend cannot do yet (status category 2000)."""


def _error_class(status):
    cat = (int(status) // 1000) * 1000
    if cat == STATUS_BAD_PARAM:
        return FlashkitValueError
    if cat == STATUS_NOT_SUPPORTED:
        return FlashkitNotSupportedError
    return FlashkitError


# --- loading -------------------------------------------------------------------------------------------

def _library_path():
    env = os.environ.get("FLASHKIT_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libflashkit.so", "libflashkit.dylib", "flashkit.dll"):
        p = os.path.join(here, "_native", name)
        if os.path.exists(p):
            return p
    raise ImportError(
        "flashkit: the C library is not bundled in this package (expected flashkit/_native/libflashkit.so); "
        "install with `pip install ./python` from the repository, or set FLASHKIT_LIBRARY to a built "
        "libflashkit.so")


LIBRARY_PATH = _library_path()
lib = ctypes.CDLL(LIBRARY_PATH)

_T = POINTER(fk_tensor)
_Ctx = c_void_p

# name: (restype, argtypes). A symbol missing from an older/partial build is bound to a stub that raises
# NotImplementedError when called, so the rest of the package still works.
_PROTOTYPES = {
    "fk_version_number": (c_uint, []),
    "fk_version_string": (c_char_p, []),
    "fk_status_string": (c_char_p, [c_int]),
    "fk_last_error_message": (c_char_p, []),
    "fk_get_build_info": (None, [POINTER(fk_build_info)]),
    "fk_get_device_props": (c_int, [fk_device, POINTER(fk_device_props)]),
    "fk_context_init": (c_int, [fk_device, POINTER(fk_context_options), POINTER(c_void_p)]),
    "fk_context_free": (None, [_Ctx]),
    "fk_context_num_threads": (c_int, [_Ctx]),
    "fk_attn_args_init": (None, [POINTER(fk_attn_args)]),
    "fk_attn_fwd_workspace_size": (c_int, [_Ctx, POINTER(fk_attn_args), POINTER(c_size_t)]),
    "fk_attn_fwd": (c_int, [_Ctx, POINTER(fk_attn_args), c_void_p, c_size_t, c_void_p]),
    "fk_attn_bwd_workspace_size": (c_int, [_Ctx, POINTER(fk_attn_args), POINTER(c_size_t)]),
    "fk_attn_bwd": (c_int, [_Ctx, POINTER(fk_attn_args), c_void_p, c_size_t, c_void_p]),
    "fk_attn_kvcache_args_init": (None, [POINTER(fk_attn_kvcache_args)]),
    "fk_attn_kvcache_workspace_size": (c_int, [_Ctx, POINTER(fk_attn_kvcache_args), POINTER(c_size_t)]),
    "fk_attn_fwd_kvcache": (c_int, [_Ctx, POINTER(fk_attn_kvcache_args), c_void_p, c_size_t, c_void_p]),
    "fk_rmsnorm_args_init": (None, [POINTER(fk_rmsnorm_args)]),
    "fk_rmsnorm_fwd": (c_int, [_Ctx, POINTER(fk_rmsnorm_args), c_void_p]),
    "fk_rmsnorm_bwd_workspace_size": (c_int, [_Ctx, POINTER(fk_rmsnorm_args), POINTER(c_size_t)]),
    "fk_rmsnorm_bwd": (c_int, [_Ctx, POINTER(fk_rmsnorm_args), c_void_p, c_size_t, c_void_p]),
    "fk_rope_args_init": (None, [POINTER(fk_rope_args)]),
    "fk_rope_fwd": (c_int, [_Ctx, POINTER(fk_rope_args), c_void_p]),
    "fk_rope_bwd": (c_int, [_Ctx, POINTER(fk_rope_args), c_void_p]),
    "fk_swiglu_args_init": (None, [POINTER(fk_swiglu_args)]),
    "fk_swiglu_fwd": (c_int, [_Ctx, POINTER(fk_swiglu_args), c_void_p]),
    "fk_swiglu_bwd": (c_int, [_Ctx, POINTER(fk_swiglu_args), c_void_p]),
}

MISSING = []


class _Missing:
    def __init__(self, name):
        self.name = name

    def __call__(self, *args):
        raise FlashkitNotSupportedError(
            STATUS_NOT_SUPPORTED, "not supported",
            f"{self.name} is not in this libflashkit build ({LIBRARY_PATH})")


class _Fns:
    pass


fn = _Fns()
for _name, (_res, _args) in _PROTOTYPES.items():
    try:
        _f = getattr(lib, _name)
        _f.restype = _res
        _f.argtypes = _args
    except AttributeError:
        _f = _Missing(_name)
        MISSING.append(_name)
    setattr(fn, _name[3:], _f)  # fn.attn_fwd, fn.status_string, ...


def check(status):
    """Raise the library's error for a non-zero fk_status (call right after the failing call, same thread)."""
    if status != STATUS_SUCCESS:
        msg = fn.last_error_message()
        msg = msg.decode("utf-8", "replace") if msg else ""
        name = fn.status_string(status)
        name = name.decode() if name else "unknown status"
        raise _error_class(status)(status, name, msg)


def version():
    return fn.version_string().decode()


def build_info():
    info = fk_build_info()
    fn.get_build_info(ctypes.byref(info))
    return {"cuda_compiled": bool(info.cuda_compiled), "openmp": bool(info.openmp), "cpu_simd": info.cpu_simd,
            "cuda_device_count": info.cuda_device_count, "library": LIBRARY_PATH}


# --- contexts: one per device, created on first use, freed at exit ---------------------------------------

_contexts = {}
_contexts_lock = threading.Lock()
_cpu_threads = 0  # fk_context_options.num_threads for the CPU context; 0 = OpenMP's default


def _new_context(kind, index):
    handle = c_void_p()
    opts = fk_context_options(_cpu_threads if kind == DEVICE_CPU else 0)
    check(fn.context_init(fk_device(kind, index), ctypes.byref(opts), ctypes.byref(handle)))
    return handle.value


def context(kind, index):
    key = (kind, index)
    ctx = _contexts.get(key)
    if ctx is not None:
        return ctx
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _new_context(kind, index)
            _contexts[key] = ctx
    return ctx


def set_num_threads(n):
    """Threads of the CPU backend for the calls that follow (0 = OpenMP's default: OMP_NUM_THREADS or all
    cores); like torch.set_num_threads. Replaces the CPU context, so call it between flashkit calls, not while
    another thread is inside one."""
    global _cpu_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"flashkit: set_num_threads needs an int >= 0, got {n!r}")
    key = (DEVICE_CPU, 0)
    with _contexts_lock:
        old, _cpu_threads = _cpu_threads, n
        try:
            ctx = _new_context(DEVICE_CPU, 0)
        except FlashkitError:
            _cpu_threads = old
            raise
        prev = _contexts.get(key)
        _contexts[key] = ctx
    if prev is not None:
        fn.context_free(prev)


def get_num_threads():
    """Threads the CPU backend's calls use (fk_context_num_threads of the CPU context)."""
    return int(fn.context_num_threads(context(DEVICE_CPU, 0)))


def _free_contexts():
    for ctx in _contexts.values():
        fn.context_free(ctx)
    _contexts.clear()


import atexit  # noqa: E402

atexit.register(_free_contexts)


# --- argument templates: the _init defaults, filled once and copied per call -----------------------------

def _template(struct, init_name):
    t = struct()
    f = getattr(fn, init_name)
    if isinstance(f, _Missing):
        return None
    f(ctypes.byref(t))
    return bytes(t)


ATTN_DEFAULTS = _template(fk_attn_args, "attn_args_init")
KVCACHE_DEFAULTS = _template(fk_attn_kvcache_args, "attn_kvcache_args_init")
RMSNORM_DEFAULTS = _template(fk_rmsnorm_args, "rmsnorm_args_init")
ROPE_DEFAULTS = _template(fk_rope_args, "rope_args_init")
SWIGLU_DEFAULTS = _template(fk_swiglu_args, "swiglu_args_init")


def new_args(struct, defaults):
    if defaults is None:
        return struct()
    return struct.from_buffer_copy(defaults)


# fk_tensor as packed bytes: data, dtype, device.kind, device.index, ndim, shape[4], stride[4]. Writing a
# descriptor with one pack_into costs a fifth of setting its fields one by one through ctypes (test_abi.py
# checks that this format's offsets are the struct's).
TENSOR_FORMAT = "=Qiiii4q4q"
_pack_tensor = __import__("struct").Struct(TENSOR_FORMAT).pack_into
_PAD = (0, 0, 0, 0)


def set_tensor(t, ptr, dtype, dev_kind, dev_index, shape, strides):
    """Fill an fk_tensor in place (shape/strides in elements, at most 4 dims)."""
    n = len(shape)
    _pack_tensor(t, 0, ptr or 0, dtype, dev_kind, dev_index, n, *shape, *_PAD[n:], *strides, *_PAD[n:])
