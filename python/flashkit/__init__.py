"""flashkit: fused transformer kernels (FlashAttention forward/backward, RMSNorm, RoPE, SwiGLU) from the
flashkit C library, with flash_attn's Python API, on torch (CPU and CUDA), NumPy, CuPy and JAX arrays.

    from flashkit import flash_attn_func      # instead of: from flash_attn import flash_attn_func

Errors from the library raise FlashkitError (a RuntimeError) carrying the library's message; invalid
arguments raise FlashkitValueError (also a ValueError), unsupported ones FlashkitNotSupportedError (also a
NotImplementedError).
"""
import sys as _sys

from ._lib import (FlashkitError, FlashkitNotSupportedError, FlashkitValueError,  # noqa: F401
                   build_info, get_num_threads, set_num_threads, version)
from .attention import (flash_attn_backward, flash_attn_func, flash_attn_kvpacked_func,  # noqa: F401
                        flash_attn_qkvpacked_func, flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                        flash_attn_varlen_qkvpacked_func, flash_attn_with_kvcache)
from .ops import (apply_rotary_emb, apply_rotary_emb_backward, rms_norm, rms_norm_backward, swiglu,  # noqa: F401
                  swiglu_backward)

__version__ = "0.1.0"

if "torch" in _sys.modules:  # register the torch custom ops now (else on the first torch tensor seen)
    from . import _arrays as _a

    _a.torch_ops(_sys.modules["torch"].empty(0))
