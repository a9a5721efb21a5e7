"""The ctypes structs in flashkit/_lib.py against the C compiler's view of include/flashkit.h: every struct's
size and every field's offset, from a tiny C program compiled here."""
import os
import shutil
import subprocess

import pytest

from flashkit import _lib

HEADER_DIR = os.environ.get("FLASHKIT_INCLUDE") or os.path.join(os.path.dirname(__file__), "..", "..", "include")


def _c_layout(tmp_path):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not os.path.exists(os.path.join(HEADER_DIR, "flashkit.h")):
        pytest.skip("no C compiler or no include/flashkit.h next to the tests")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <flashkit.h>", "int main(void) {"]
    for name, st in _lib.ABI_STRUCTS.items():
        lines.append(f'printf("{name} size %zu\\n", sizeof({name}));')
        for field, _ in st._fields_:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof({name}, {field}));')
    lines += ["return 0;", "}"]
    src = tmp_path / "abi.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "abi"
    subprocess.check_call([cc, "-std=c11", "-I", HEADER_DIR, str(src), "-o", str(exe)])
    out = subprocess.check_output([str(exe)], text=True)
    return {tuple(l.split()[:2]): int(l.split()[2]) for l in out.splitlines()}


def test_struct_layout_matches_header(tmp_path):
    c = _c_layout(tmp_path)
    for name, st in _lib.ABI_STRUCTS.items():
        assert c[(name, "size")] == __import__("ctypes").sizeof(st), name
        for field, _ in st._fields_:
            assert c[(name, field)] == getattr(st, field).offset, f"{name}.{field}"


def test_every_struct_field_is_mirrored():
    """Field lists parsed from the header text, in order, must equal the ctypes lists."""
    import re

    path = os.path.join(HEADER_DIR, "flashkit.h")
    if not os.path.exists(path):
        pytest.skip("no include/flashkit.h next to the tests")
    with open(path) as fh:
        text = re.sub(r"//[^\n]*", "", fh.read())
    for name, st in _lib.ABI_STRUCTS.items():
        m = re.search(r"typedef struct %s \{(.*?)\} %s;" % (name, name), text, re.S)
        assert m, name
        fields = []
        for decl in m.group(1).split(";"):
            decl = decl.strip()
            if not decl:
                continue
            decl = re.sub(r"\[[^\]]*\]", "", decl)  # arrays
            parts = decl.replace("*", " ").split()
            names = " ".join(parts[1:]).replace(" ,", ",").split(",")
            if len(names) == 1:
                fields.append(parts[-1])
            else:
                fields += [n.strip().split()[-1] for n in names]
        assert fields == [f for f, _ in st._fields_], name


def test_version_matches_header():
    path = os.path.join(HEADER_DIR, "flashkit.h")
    if not os.path.exists(path):
        pytest.skip("no header")
    import re

    with open(path) as fh:
        text = fh.read()
    major, minor, patch = (int(re.search(rf"#define FK_VERSION_{p} (\d+)", text).group(1))
                           for p in ("MAJOR", "MINOR", "PATCH"))
    assert _lib.fn.version_number() == major * 10000 + minor * 100 + patch


def test_packed_tensor_format():
    """set_tensor writes fk_tensor with struct.pack_into: its format must land on the struct's offsets."""
    import ctypes
    import struct

    t = _lib.fk_tensor()
    _lib.set_tensor(t, 0x1234, _lib.F64, _lib.DEVICE_CUDA, 3, (2, 5, 7), (35, 7, 1))
    assert struct.calcsize(_lib.TENSOR_FORMAT) == ctypes.sizeof(_lib.fk_tensor)
    assert (t.data, t.dtype, t.device.kind, t.device.index, t.ndim) == (0x1234, _lib.F64, _lib.DEVICE_CUDA, 3, 3)
    assert list(t.shape) == [2, 5, 7, 0] and list(t.stride) == [35, 7, 1, 0]
