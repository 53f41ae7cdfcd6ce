"""llama.cpp's log messages go to Python logging, not stderr: a thread switch during serving
(the thread policy's probes) used to print ``set_n_threads: ...`` into the server log."""

from __future__ import annotations

import logging

import pytest

from labs_api.engines.chat.llama_cpp_model import LlamaCppModel

pytestmark = pytest.mark.slow


def switch_threads(model: LlamaCppModel) -> None:
    model.set_threads(1)
    model.set_threads(2)


def test_a_thread_switch_prints_nothing_to_stderr(bundled_llama, capfd, caplog):
    caplog.set_level(logging.INFO, logger="labs_api.llama_cpp.native")
    capfd.readouterr()
    switch_threads(bundled_llama)
    out, err = capfd.readouterr()
    assert "set_n_threads" not in err + out
    assert not [r for r in caplog.records if r.name == "labs_api.llama_cpp.native"]


def test_debug_logging_shows_what_llama_cpp_said(bundled_llama, caplog):
    caplog.set_level(logging.DEBUG, logger="labs_api.llama_cpp.native")
    switch_threads(bundled_llama)
    messages = [r.getMessage() for r in caplog.records if r.name == "labs_api.llama_cpp.native"]
    assert any("n_threads = 1" in m for m in messages), messages
    assert any("n_threads = 2" in m for m in messages), messages
    assert all(m == m.strip() and m for m in messages)
    assert {r.levelno for r in caplog.records} == {logging.DEBUG}
