"""Reading llama.cpp's system info: a native build on a Sapphire Rapids Xeon is told apart."""

from labs_api.engines.chat.llama_cpp_build import PORTABLE_X86_FEATURES, compiled_features

PORTABLE = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
            "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
NATIVE_XEON = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | "
               "FMA = 1 | BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | "
               "AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")


def test_the_portable_build_reports_only_portable_features():
    assert compiled_features(PORTABLE) == PORTABLE_X86_FEATURES


def test_a_native_xeon_build_shows_its_amx_and_avx512():
    extra = compiled_features(NATIVE_XEON) - PORTABLE_X86_FEATURES
    assert {"AMX_INT8", "AVX512", "AVX_VNNI"} <= extra
    assert "OPENMP" not in compiled_features(NATIVE_XEON)
