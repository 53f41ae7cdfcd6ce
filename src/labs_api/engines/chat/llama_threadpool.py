"""ggml's own CPU threadpool, kept for the life of a llama.cpp context.

Built without OpenMP (``-DGGML_OPENMP=OFF``, see ``scripts/build-llama-cpp``), ggml runs a
graph on threads of its own. Unless a pool is attached to the context, it makes a new pool for
every graph (threads created and joined for each decoded token); an attached pool keeps its
threads, and between two graphs they *poll* for the next one for a while (``poll``: 0 to 100,
about 1024 x 128 x poll pause instructions) and then sleep on a condition variable.

What it gives (README, Benchmarks, 2026-12-07, a 2-core Xeon): decoding 1.5-3.5% faster than
the OpenMP build (llama-server gains about as much built so), and no OpenMP runtime shared
with torch when both run in one process. The poll level made no difference that the noise let
through; 0 is the default because an idle pool then leaves its core to other engines at once.

llama-cpp-python binds neither ``ggml_threadpool_new`` nor ``llama_attach_threadpool``; they are
called through ctypes, looked up the way llama.cpp's own tools look them up (the CPU backend's
``ggml_backend_reg_get_proc_address``).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

#: ggml.h: GGML_MAX_N_THREADS, the length of the params' cpumask.
_MAX_THREADS = 512
#: ggml-backend.h: GGML_BACKEND_DEVICE_TYPE_CPU.
_DEVICE_TYPE_CPU = 0


class _ThreadpoolParams(ctypes.Structure):
    """ggml.h's ``struct ggml_threadpool_params``."""

    _fields_ = [
        ("cpumask", ctypes.c_bool * _MAX_THREADS),  # all false: inherit the process's affinity
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),  # enum ggml_sched_priority; 0: normal
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


def _ggml_library_beside(llama_library: ctypes.CDLL) -> str:
    """libggml as libllama found it: the file beside it (llama-cpp-python's layout; the same
    file is the same loaded library), else its soname, which matches the copy in memory."""
    sibling = Path(llama_library._name).with_name("libggml.so")
    return str(sibling) if sibling.is_file() else "libggml.so.0"


class _GgmlFunctions:
    """The few ggml and llama.cpp functions a pool needs, with their C signatures."""

    def __init__(self, llama_library: ctypes.CDLL) -> None:
        ggml = ctypes.CDLL(_ggml_library_beside(llama_library))
        ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
        ggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
        ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        device = ggml.ggml_backend_dev_by_type(_DEVICE_TYPE_CPU)
        if not device:
            raise OSError("llama.cpp has no CPU backend")
        registry = ggml.ggml_backend_dev_backend_reg(device)

        def cpu_function(name: str, restype: Any, *argtypes: Any) -> Any:
            address = ggml.ggml_backend_reg_get_proc_address(registry, name.encode())
            if not address:
                raise OSError(f"llama.cpp's CPU backend has no {name}")
            return ctypes.CFUNCTYPE(restype, *argtypes)(address)

        self.new = cpu_function("ggml_threadpool_new", ctypes.c_void_p,
                                ctypes.POINTER(_ThreadpoolParams))
        self.free = cpu_function("ggml_threadpool_free", None, ctypes.c_void_p)
        self.attach = llama_library.llama_attach_threadpool
        self.attach.restype = None
        self.attach.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.detach = llama_library.llama_detach_threadpool
        self.detach.restype = None
        self.detach.argtypes = [ctypes.c_void_p]


class GgmlThreadpool:
    """A pool of ``threads`` threads attached to ``context`` (for single-token and batch
    decodes alike) until ``close``. A decode may use fewer threads than the pool has
    (``llama_set_n_threads``); ggml clamps a request for more to the pool's size."""

    def __init__(self, llama_library: ctypes.CDLL, context: Any, threads: int,
                 poll: int) -> None:
        if threads < 1 or not 0 <= poll <= 100:
            raise ValueError("a threadpool needs threads >= 1 and poll in 0..100")
        self._functions = functions = _GgmlFunctions(llama_library)
        params = _ThreadpoolParams()
        params.n_threads = threads
        params.poll = poll
        self._pool = functions.new(ctypes.byref(params))
        if not self._pool:
            raise OSError(f"ggml could not start a threadpool of {threads} threads")
        self._context = ctypes.cast(context, ctypes.c_void_p)
        functions.attach(self._context, self._pool, self._pool)
        self.threads = threads
        self.poll = poll

    def close(self) -> None:
        """Detach the pool from the context and stop its threads (before the context goes)."""
        if self._pool:
            self._functions.detach(self._context)
            self._functions.free(self._pool)
            self._pool = None
