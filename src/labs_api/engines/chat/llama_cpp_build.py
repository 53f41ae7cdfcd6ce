"""What the installed llama.cpp was compiled for, read from the library itself.

``scripts/build-llama-cpp`` builds llama.cpp without ``-march=native`` and without AMX, so the
wheel runs on any x86-64 CPU with AVX2. A build made otherwise (plain ``pip install
llama-cpp-python`` compiles for the build machine) may fault on another CPU, or on this one:
llama.cpp's AMX path crashes on current Linux kernels. The chat engine logs what it runs and
warns about such a build once, at load.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("labs_api.llama_cpp")

#: Instruction-set features of the portable x86-64 build (Haswell / Zen and newer).
PORTABLE_X86_FEATURES = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"})
#: Features the library reports that are not instruction sets.
NOT_INSTRUCTION_SETS = frozenset({"LLAMAFILE", "OPENMP", "REPACK", "ACCELERATE", "KLEIDIAI"})


def compiled_features(system_info: str) -> set[str]:
    """The features ``llama_print_system_info`` says are on (``NAME = 1``)."""
    return {name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info)
            if value != "0"} - NOT_INSTRUCTION_SETS


def built_with_openmp(system_info: str) -> bool:
    """Whether ``llama_print_system_info`` says the CPU backend uses OpenMP (then ggml needs
    no pool of ours: OpenMP keeps its own threads)."""
    return "OPENMP = 1" in system_info


def system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()


def report_build() -> set[str]:
    """Log the features llama.cpp was built with; warn about AMX. Returns the features."""
    features = compiled_features(system_info())
    log.info("llama.cpp is built for: %s", " ".join(sorted(features)) or "baseline CPU")
    if any(name.startswith("AMX") for name in features):
        log.warning("this llama.cpp build has the AMX path, which faults on current Linux "
                    "kernels; rebuild it with scripts/build-llama-cpp (no AMX)")
    return features
