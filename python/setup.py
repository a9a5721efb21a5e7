"""Builds libflashkit.so with CMake and bundles it in the package (flashkit/_native/), so that
`pip install ./python` is the only command a user runs. Only the build step lives here; the metadata is in
pyproject.toml.

Environment:
  FLASHKIT_CUDA=AUTO|ON|OFF    CUDA backend (default AUTO: compiled when nvcc is found; OFF is much faster
                               to build)
  FLASHKIT_CMAKE_ARGS="..."    extra CMake arguments (e.g. -DCMAKE_CUDA_ARCHITECTURES=90)
  FLASHKIT_BUILD_DIR=path      CMake build folder (default: build-pip-<cuda> in the repository, kept between
                               installs so a reinstall only rebuilds what changed)
  FLASHKIT_JOBS=N              parallel build jobs (default: all cores)
"""
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


def _source_dir():
    src = os.environ.get("FLASHKIT_SOURCE_DIR") or os.path.dirname(HERE)
    if not os.path.exists(os.path.join(src, "CMakeLists.txt")) or not os.path.exists(
            os.path.join(src, "include", "flashkit.h")):
        sys.exit(f"flashkit: the C sources were not found at {src}; install from a clone of the repository "
                 "(`pip install ./python`) or set FLASHKIT_SOURCE_DIR")
    return src


def _build_library():
    src = _source_dir()
    cuda = os.environ.get("FLASHKIT_CUDA", "AUTO").upper()
    build = os.environ.get("FLASHKIT_BUILD_DIR") or os.path.join(src, f"build-pip-{cuda.lower()}")
    jobs = os.environ.get("FLASHKIT_JOBS") or str(os.cpu_count() or 2)
    cmake = shutil.which("cmake")
    if cmake is None:
        sys.exit("flashkit: cmake (>= 3.22) is needed to build the C library; install it (apt-get install cmake "
                 "or pip install cmake) and retry")
    cfg = [cmake, "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DFK_CUDA={cuda}",
           "-DFK_BUILD_TESTS=OFF"] + os.environ.get("FLASHKIT_CMAKE_ARGS", "").split()
    subprocess.check_call(cfg)
    subprocess.check_call([cmake, "--build", build, "--target", "flashkit", "-j", jobs])
    for name in ("libflashkit.so", "libflashkit.dylib", "flashkit.dll"):
        p = os.path.join(build, name)
        if os.path.exists(p):
            return p, name
    sys.exit(f"flashkit: the build finished but no shared library was found in {build}")


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        lib, name = _build_library()
        dest = os.path.join(self.build_lib, "flashkit", "_native")
        os.makedirs(dest, exist_ok=True)
        shutil.copyfile(lib, os.path.join(dest, name))  # copies the file the symlink points at


class BinaryDistribution(Distribution):
    def has_ext_modules(self):  # the wheel carries a native library: tag it for this platform
        return True


setup(cmdclass={"build_py": BuildPyWithLibrary}, distclass=BinaryDistribution)
