"""The installed llama.cpp runs on other CPUs than the one that built it: no AMX, no
AVX-512, no -march=native; only what every x86-64 CPU with AVX2 has."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from labs_api.engines.chat.llama_cpp_build import (
    PORTABLE_X86_FEATURES,
    built_with_openmp,
    compiled_features,
    system_info,
)

ROOT = Path(__file__).resolve().parents[2]
BUILD_RECORD = ROOT / ".venv" / ".labs-llama-build"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the portable feature set checked here is x86-64's")


def cpu_library() -> Path:
    import llama_cpp

    libraries = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so"))
    assert libraries, "llama-cpp-python has no libggml-cpu library"
    return libraries[0]


def test_the_features_llama_cpp_reports_are_the_portable_set():
    features = compiled_features(system_info())
    assert {"AVX2", "FMA", "F16C"} <= features, features  # not a slow baseline build either
    assert features <= PORTABLE_X86_FEATURES, f"built for this CPU only: {features}"


def test_the_cpu_library_has_no_amx_or_avx512_instructions():
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    listing = subprocess.run(["objdump", "-d", str(cpu_library())], capture_output=True,
                             text=True, check=True).stdout
    assert "ldtilecfg" not in listing and "tdpbssd" not in listing  # AMX
    assert "%zmm" not in listing  # AVX-512 registers
    assert "%ymm" in listing  # AVX2 code is there


def test_scripts_setup_built_it_with_explicit_flags():
    if not BUILD_RECORD.is_file():
        pytest.skip("llama-cpp-python was not installed by scripts/setup here")
    flags = BUILD_RECORD.read_text().splitlines()[1]
    if "-DGGML_NATIVE=OFF" not in flags:
        pytest.skip(f"built with the user's own LABS_LLAMA_CMAKE_ARGS: {flags}")
    assert "-DGGML_AMX_INT8=OFF" in flags and "-DGGML_AVX512=OFF" in flags
    assert "-DGGML_OPENMP=OFF" in flags  # ggml's own pool (llama_threadpool.py)
    assert not built_with_openmp(system_info())
