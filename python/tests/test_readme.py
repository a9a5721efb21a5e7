"""The README's Python examples run as written (on the CPU when no GPU is present: device="cuda" becomes
device="cpu", which the README says works the same), and return what their comments say."""
import os
import re

import pytest

from conftest import HAS_CUDA, torch

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def _blocks():
    if not os.path.exists(README):
        return []
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Python"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


BLOCKS = _blocks()


def test_readme_has_torch_and_numpy_examples():
    if not BLOCKS:
        pytest.skip("README.md is not next to the tests (an installed copy of the tests)")
    assert any("import torch" in b and "flash_attn_func" in b for b in BLOCKS)
    assert any("import numpy" in b and "flash_attn_func" in b for b in BLOCKS)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i):
    code = BLOCKS[i]
    if "torch" in code and torch is None:
        pytest.skip("torch not installed")
    if not HAS_CUDA:
        code = code.replace('device="cuda"', 'device="cpu"')
    ns = {}
    exec(compile(code, f"README.md python block {i}", "exec"), ns)
    if "lse" in ns:  # return_attn_probs=True gives the LSE, (B, H, S), fp32, as flash_attn's softmax_lse
        out, lse = ns["out"], ns["lse"]
        B, S, H, _ = out.shape
        assert tuple(lse.shape) == (B, H, S)
        assert str(lse.dtype).endswith("float32")
    if "q" in ns and hasattr(ns["q"], "grad") and ns["q"].requires_grad:
        assert ns["q"].grad is not None and ns["q"].grad.shape == ns["q"].shape
