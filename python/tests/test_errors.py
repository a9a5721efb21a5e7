"""Error cases: the library's message reaches Python; unsupported arguments raise NotImplementedError."""
import numpy as np
import pytest

import flashkit
from conftest import randn, rng

has_attn = pytest.mark.skipif("fk_attn_fwd" in flashkit._lib.MISSING, reason="no attention in this build")


def _qkv(fw, Hq=4, Hk=2, D=16, dk=None):
    r = rng(0)
    return (fw.arr(randn(r, 1, 5, Hq, D)), fw.arr(randn(r, 1, 6, Hk, dk or D)), fw.arr(randn(r, 1, 6, Hk, dk or D)))


@pytest.mark.parametrize("kwargs, what", [
    ({"dropout_p": 0.1}, "dropout"),
    ({"softmax_scale": 0.0}, "softmax_scale"),
])
def test_unsupported_arguments(fw, kwargs, what):
    q, k, v = _qkv(fw)
    with pytest.raises(NotImplementedError, match=what):
        flashkit.flash_attn_func(q, k, v, **kwargs)


def test_kvcache_not_implemented(fw):
    q, k, v = _qkv(fw)
    with pytest.raises(NotImplementedError, match="kvcache"):
        flashkit.flash_attn_with_kvcache(q, k, v)


def test_block_table_not_implemented(fw):
    q, k, v = _qkv(fw)
    with pytest.raises(NotImplementedError, match="block_table"):
        flashkit.flash_attn_varlen_func(q[0], k[0], v[0], None, None, 5, 6, block_table=q)


@has_attn
def test_bad_heads_message(fw):
    q, k, v = _qkv(fw, Hq=3, Hk=2)
    with pytest.raises(ValueError) as e:
        flashkit.flash_attn_func(q, k, v)
    assert isinstance(e.value, flashkit.FlashkitError)
    assert e.value.status == 1007  # FK_STATUS_BAD_PARAM_HEADS
    assert e.value.library_message and "attn" in str(e.value)


@has_attn
def test_head_dim_mismatch(fw):
    q, k, v = _qkv(fw, dk=8)
    with pytest.raises(flashkit.FlashkitValueError) as e:
        flashkit.flash_attn_func(q, k, v)
    assert e.value.library_message


@has_attn
def test_head_dim_too_large(fw):
    if fw.device == "cuda":
        pytest.skip("CPU rule")
    q, k, v = _qkv(fw, D=264)
    with pytest.raises(NotImplementedError) as e:
        flashkit.flash_attn_func(q, k, v)
    assert isinstance(e.value, flashkit.FlashkitNotSupportedError) and e.value.library_message


@has_attn
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
