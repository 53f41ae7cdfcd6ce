"""llama.cpp's own log messages, routed into Python logging instead of stderr.

llama-cpp-python installs a log callback at import that prints every message llama.cpp sends it,
debug ones included, to stderr. Most of them are loader chatter, but two come during serving:
``set_n_threads: n_threads = 1, ...`` each time the thread policy switches (a line per probe of
a long stream), and the threadpool's attach. Here they go to the ``labs_api.llama_cpp.native``
logger instead: below llama.cpp's error level as DEBUG, errors as WARNING (the engine reports
what failed itself, with its reason), so the server log says what happened once and
``LABS_LOG_LEVEL=debug`` still shows everything llama.cpp said.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger("labs_api.llama_cpp.native")

#: ggml_log_level: NONE 0, INFO 1, WARN 2, ERROR 3, DEBUG 4, CONT 5 (continues the last one).
_ERROR, _CONT = 3, 5

_installed: list[Any] = []  # the callback (kept alive: llama.cpp holds only its address)


class _Router:
    """Keeps the level of the last message, for llama.cpp's continuation fragments."""

    def __init__(self) -> None:
        self.level = logging.DEBUG

    def __call__(self, level: int, text: bytes | None, _user_data: Any) -> None:
        if level != _CONT:
            self.level = logging.WARNING if level == _ERROR else logging.DEBUG
        if text and log.isEnabledFor(self.level):
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                log.log(self.level, "%s", message)


def route_native_log(lib: Any) -> None:
    """Install the routing callback (once per process); ``lib`` is the ``llama_cpp`` module."""
    if _installed:
        return
    callback = lib.llama_log_callback(_Router())
    lib.llama_log_set(callback, ctypes.c_void_p(0))
    _installed.append(callback)
