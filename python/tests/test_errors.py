"""Error cases: the library's message reaches Python; unsupported arguments raise NotImplementedError."""
import numpy as np
import pytest

import flashkit
from conftest import randn, rng

def _qkv(fw, Hq=4, Hk=2, D=16, dk=None):
    r = rng(0)
    return (fw.arr(randn(r, 1, 5, Hq, D)), fw.arr(randn(r, 1, 6, Hk, dk or D)), fw.arr(randn(r, 1, 6, Hk, dk or D)))


def _every_entry(fw, **kw):
    """Each flash_attn-compatible entry point, called with kw on small valid operands."""
    r = rng(9)
    q, k, v = _qkv(fw)
    qkv = fw.arr(randn(r, 1, 5, 3, 2, 16))
    kv = fw.arr(randn(r, 1, 6, 2, 2, 16))
    cu = fw.arr(np.array([0, 2, 5], np.int32))
    tq, tk = fw.arr(randn(r, 5, 4, 16)), fw.arr(randn(r, 5, 2, 16))
    tqkv, tkv = fw.arr(randn(r, 5, 3, 2, 16)), fw.arr(randn(r, 5, 2, 2, 16))
    return {
        "func": lambda: flashkit.flash_attn_func(q, k, v, **kw),
        "qkvpacked": lambda: flashkit.flash_attn_qkvpacked_func(qkv, **kw),
        "kvpacked": lambda: flashkit.flash_attn_kvpacked_func(q, kv, **kw),
        "varlen": lambda: flashkit.flash_attn_varlen_func(tq, tk, tk, cu, cu, 3, 3, **kw),
        "varlen_qkvpacked": lambda: flashkit.flash_attn_varlen_qkvpacked_func(tqkv, cu, 3, **kw),
        "varlen_kvpacked": lambda: flashkit.flash_attn_varlen_kvpacked_func(tq, tkv, cu, cu, 3, 3, **kw),
    }


ENTRIES = ["func", "qkvpacked", "kvpacked", "varlen", "varlen_qkvpacked", "varlen_kvpacked"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("kwargs, what", [
    ({"dropout_p": 0.1}, "dropout"),
    ({"dropout_p": 0.1, "return_attn_probs": True}, "dropout"),
    ({"softmax_scale": 0.0}, "softmax_scale"),
], ids=["dropout", "dropout_probs", "scale0"])
def test_unsupported_arguments(fw, entry, kwargs, what):
    """What flashkit cannot do raises NotImplementedError naming the argument, on every entry point, rather than
    computing something else (dropout ignored, or a scale of 0 read as the C API's 'default')."""
    with pytest.raises(NotImplementedError, match=what):
        _every_entry(fw, **kwargs)[entry]()


@pytest.mark.parametrize("entry", ENTRIES)
def test_supported_defaults_still_work(fw, entry):
    """The same entry points with dropout_p=0.0 (flash_attn's evaluation setting) and an explicit scale run."""
    out = _every_entry(fw, dropout_p=0.0, softmax_scale=0.3)[entry]()
    fw.check_kind(out)
    assert np.all(np.isfinite(fw.np(out)))


def test_library_message_reaches_python(fw):
    """A failed call raises the library's own sentence (fk_last_error_message, read right after the call on the
    same thread), with the status name and number; the class follows the status category."""
    q, k, v = _qkv(fw, Hq=3, Hk=2)
    with pytest.raises(flashkit.FlashkitError) as e:
        flashkit.flash_attn_func(q, k, v)
    lib_msg = flashkit._lib.fn.last_error_message().decode()  # still the failed call's: nothing ran since
    assert e.value.library_message == lib_msg
    assert lib_msg.startswith("attn_fwd") and "nheads_q (3, q.shape[2])" in lib_msg
    assert str(e.value) == f"{lib_msg} [{e.value.status_name}, status 1007]"
    assert e.value.status_name == flashkit._lib.fn.status_string(1007).decode()
    assert isinstance(e.value, ValueError) and not isinstance(e.value, NotImplementedError)


@pytest.mark.parametrize("kwargs, status, words", [
    ({"window_size": (-3, 0)}, 1008, "window_left"),
    ({"softcap": float("inf")}, 1008, "softcap"),
    ({"softmax_scale": -1.0}, 1008, "softmax_scale"),
    ({"alibi_slopes": "wrong shape"}, 1002, "alibi_slopes.shape[0]"),
])
def test_attn_bad_values(fw, kwargs, status, words):
    q, k, v = _qkv(fw)
    if kwargs.get("alibi_slopes") == "wrong shape":
        kwargs = {"alibi_slopes": fw.arr(np.ones(3, np.float32))}
    with pytest.raises(flashkit.FlashkitValueError) as e:
        flashkit.flash_attn_func(q, k, v, **kwargs)
    assert e.value.status == status and words in e.value.library_message


def test_varlen_max_seqlen_too_small(fw):
    """flash_attn trusts max_seqlen_*; flashkit's CPU backend checks it against cu_seqlens. On CUDA the offsets
    stay on the device (no host sync): the kernels bound them instead (tests/test_attn.c covers that)."""
    if fw.device == "cuda":
        pytest.skip("CPU rule: CUDA does not read cu_seqlens on the host")
    r = rng(10)
    q = fw.arr(randn(r, 10, 2, 16))
    cu = fw.arr(np.array([0, 4, 10], np.int32))
    with pytest.raises(flashkit.FlashkitValueError, match="max_seqlen_q"):
        flashkit.flash_attn_varlen_func(q, q, q, cu, cu, 3, 6)


def test_kvcache_runs_on_every_device(fw):
    """Decode with a KV cache runs on the CPU and on CUDA (python/tests/test_kvcache.py checks its values); the
    output comes back in the caller's kind, on the caller's device."""
    q, k, v = _qkv(fw)
    if fw.name == "jax":
        pytest.skip("JAX arrays are immutable: the cache cannot be written in place")
    out = flashkit.flash_attn_with_kvcache(q, k, v, cache_seqlens=6)
    fw.check_kind(out)
    assert tuple(out.shape) == tuple(q.shape)


def test_block_table_not_implemented(fw):
    q, k, v = _qkv(fw)
    with pytest.raises(NotImplementedError, match="block_table"):
        flashkit.flash_attn_varlen_func(q[0], k[0], v[0], None, None, 5, 6, block_table=q)


def test_bad_heads_message(fw):
    q, k, v = _qkv(fw, Hq=3, Hk=2)
    with pytest.raises(ValueError) as e:
        flashkit.flash_attn_func(q, k, v)
    assert isinstance(e.value, flashkit.FlashkitError)
    assert e.value.status == 1007  # FK_STATUS_BAD_PARAM_HEADS
    assert e.value.library_message and "attn" in str(e.value)


def test_head_dim_mismatch(fw):
    q, k, v = _qkv(fw, dk=8)
    with pytest.raises(flashkit.FlashkitValueError) as e:
        flashkit.flash_attn_func(q, k, v)
    assert e.value.library_message


def test_head_dim_too_large(fw):
    if fw.device == "cuda":
        pytest.skip("CPU rule")
    q, k, v = _qkv(fw, D=264)
    with pytest.raises(NotImplementedError) as e:
        flashkit.flash_attn_func(q, k, v)
    assert isinstance(e.value, flashkit.FlashkitNotSupportedError) and e.value.library_message


def test_dtype_mismatch(fw):
    q, k, v = _qkv(fw)
    if fw.torch:
        k = k.double()
    else:
        k = k.astype(np.float64)
    with pytest.raises(flashkit.FlashkitValueError, match="dtype"):
        flashkit.flash_attn_func(q, k, v)


def test_wrong_ndim(fw):
    q, k, v = _qkv(fw)
    with pytest.raises(ValueError, match="4 dims"):
        flashkit.flash_attn_func(q[0], k[0], v[0])


def test_unsupported_dtype(fw):
    x = fw.arr(np.ones((2, 4), dtype=np.int16))
    with pytest.raises(NotImplementedError, match="dtype"):
        flashkit.swiglu(x, x)


def test_rms_norm_weight_shape(fw):
    r = rng(1)
    with pytest.raises(flashkit.FlashkitValueError) as e:
        flashkit.rms_norm(fw.arr(randn(r, 3, 8)), fw.arr(randn(r, 7)))
    assert "weight" in e.value.library_message


def test_rms_norm_negative_eps(fw):
    r = rng(2)
    with pytest.raises(flashkit.FlashkitValueError, match="eps"):
        flashkit.rms_norm(fw.arr(randn(r, 3, 8)), fw.arr(randn(r, 8)), eps=-1.0)


def test_rope_table_too_short(fw):
    r = rng(3)
    x = fw.arr(randn(r, 1, 9, 1, 8))
    cos = fw.arr(np.ones((4, 4), np.float32))
    with pytest.raises(flashkit.FlashkitValueError, match="max_position"):
        flashkit.apply_rotary_emb(x, cos, cos)


def test_swiglu_shape_mismatch(fw):
    r = rng(4)
    with pytest.raises(flashkit.FlashkitValueError) as e:
        flashkit.swiglu(fw.arr(randn(r, 3, 8)), fw.arr(randn(r, 3, 7)))
    assert e.value.library_message


def test_mixed_frameworks():
    torch = pytest.importorskip("torch")
    r = rng(5)
    with pytest.raises(TypeError, match="one framework"):
        flashkit.swiglu(randn(r, 2, 4), torch.zeros(2, 4))
