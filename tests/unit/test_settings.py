"""Every spec variable is read with the spec's default; bad values stop start-up clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labs_api.settings import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, Settings, load_settings

SPEC_VARS = ["LABS_HOST", "LABS_PORT", "LABS_PRELOAD_ON_START", "LABS_MODEL",
             "LABS_MAX_NEW_TOKENS", "LABS_TEMPERATURE", "LABS_TOP_P", "LABS_DEVICE_MAP",
             "LABS_TORCH_DTYPE", "LABS_LOAD_IN_4BIT", "LABS_EMBEDDING_MODEL", "HF_TOKEN"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SPEC_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_spec():
    s = Settings()
    assert (s.host, s.port, s.preload_on_start) == ("0.0.0.0", 8000, True)
    assert (s.max_new_tokens, s.temperature, s.top_p) == (128, 0.7, 0.9)
    assert (s.device_map, s.torch_dtype, s.load_in_4bit) == ("auto", "bf16", False)
    assert s.model == DEFAULT_CHAT_MODEL and s.embedding_model == DEFAULT_EMBEDDING_MODEL
    assert s.hf_token is None


def test_every_spec_variable_is_read(monkeypatch):
    values = {"LABS_HOST": "127.0.0.1", "LABS_PORT": "9001", "LABS_PRELOAD_ON_START": "false",
              "LABS_MODEL": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "LABS_MAX_NEW_TOKENS": "64",
              "LABS_TEMPERATURE": "0.2", "LABS_TOP_P": "0.5", "LABS_DEVICE_MAP": "cpu",
              "LABS_TORCH_DTYPE": "fp32", "LABS_LOAD_IN_4BIT": "true",
              "LABS_EMBEDDING_MODEL": "google/embeddinggemma-300m", "HF_TOKEN": "hf_secret"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.host, s.port, s.preload_on_start) == ("127.0.0.1", 9001, False)
    assert s.model == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert (s.max_new_tokens, s.temperature, s.top_p) == (64, 0.2, 0.5)
    assert (s.device_map, s.torch_dtype, s.load_in_4bit) == ("cpu", "fp32", True)
    assert s.embedding_model == "google/embeddinggemma-300m"
    assert s.hf_token == "hf_secret" and "hf_secret" not in repr(s)


@pytest.mark.parametrize(
    ("name", "value"),
    [("LABS_PORT", "eighty"), ("LABS_PORT", "70000"), ("LABS_TEMPERATURE", "3"),
     ("LABS_TORCH_DTYPE", "int3"), ("LABS_PRELOAD_ON_START", "maybe"), ("LABS_TOP_P", "0")],
)
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    message = str(stopped.value)
    assert name in message and repr(value) in message and "\n" not in message


def test_the_command_exits_with_one_line_on_a_bad_value(monkeypatch):
    monkeypatch.setenv("LABS_TORCH_DTYPE", "int3")
    result = subprocess.run([sys.executable, "-c", "from labs_api.cli import main; main()"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "LABS_TORCH_DTYPE" in lines[0] and "bf16" in lines[0]
