"""The models file: entries, defaults from the single-model variables, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labs_api.catalog import CatalogError, build_registry, model_entries
from labs_api.keep_alive import FOREVER, parse_keep_alive
from labs_api.models_file import ModelsFileError, read_models_file
from labs_api.settings import DEFAULT_CHAT_MODEL, DEFAULT_EMBEDDING_MODEL, Settings

GOOD = """
# two chat models, an alias, the default embedding and speech models
[[models]]
id = "small"
kind = "chat"
source = "SmolLM2-135M-Instruct"
aliases = ["gpt-4o-mini", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"]
keep_alive = "10m"
preload = true
context_size = 1024
parallel = 2

[[models]]
id = "other"
kind = "chat"
source = "weights/other.gguf"
keep_alive = 0

[[models]]
id = "minilm"
kind = "embedding"
threads = 1

[[models]]
id = "joe"
kind = "speech"
aliases = ["tts-1"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def settings_for(path: Path, **values) -> Settings:
    return Settings(models_file=path, **values)


def test_a_good_file_gives_its_entries_with_their_options(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "other.gguf").write_bytes(b"GGUF")
    registry = build_registry(settings_for(write(tmp_path, GOOD), n_ctx=4096, parallel=8))
    by_id = {s.model_id: s for s in registry.slots}
    # The file has no transcription entry: LABS_STT_MODEL's default stays.
    assert sorted(by_id) == ["joe", "minilm", "other", "small", "whisper-tiny.en"]
    small, other = by_id["small"], by_id["other"]
    assert small.aliases == ("gpt-4o-mini", "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert small.keep_alive == 600 and small.preload is True
    assert other.keep_alive == 0 and other.preload is None
    # Engine options reach the settings the engine loads with; the rest stay the server's.
    own = small.load.args[2]  # functools.partial(load_chat_engine, source, id, settings)
    assert (own.n_ctx, own.parallel, own.model) == (1024, 2, DEFAULT_CHAT_MODEL)
    assert small.context_length == 1024 and "json_schema" in small.capabilities
    # A relative source is found beside the file.
    assert other.load.args[0] == str((tmp_path / "weights" / "other.gguf").resolve())
    assert other.load.args[2].n_ctx == 4096
    assert by_id["minilm"].kind == "embedding" and "dimensions" in by_id["minilm"].capabilities
    assert registry.find("tts-1") is by_id["joe"]
    assert registry.find("TinyLlama/TinyLlama-1.1B-Chat-v1.0") is small


def test_without_a_file_one_entry_per_kind_as_before():
    entries = model_entries(Settings())
    assert [(e.kind, e.id) for e in entries] == [
        ("chat", DEFAULT_CHAT_MODEL), ("embedding", DEFAULT_EMBEDDING_MODEL),
        ("speech", "en_US-joe-medium"), ("transcription", "whisper-tiny.en")]
    registry = build_registry(Settings(preload_on_start=False))
    assert registry.slots[0].keep_alive == FOREVER
    assert not any(registry.preloads(s) for s in registry.slots)


def test_an_explicit_variable_adds_its_entry_beside_the_file(tmp_path):
    path = write(tmp_path, '[[models]]\nid = "c"\nkind = "chat"\n')
    ids = [e.id for e in model_entries(Settings(models_file=path))]
    assert DEFAULT_CHAT_MODEL not in ids and "c" in ids
    ids = [e.id for e in model_entries(Settings(models_file=path, model="/m/x.gguf"))]
    assert ids[0] == "/m/x.gguf" and "c" in ids


def test_models_dir_adds_each_gguf_as_a_chat_model(tmp_path):
    for name in ("b.gguf", "a.gguf", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    entries = model_entries(Settings(models_dir=tmp_path))
    chat = [(e.id, e.source) for e in entries if e.kind == "chat"]
    assert chat == [("a", str(tmp_path / "a.gguf")), ("b", str(tmp_path / "b.gguf"))]


@pytest.mark.parametrize(("text", "expected"), [
    ('[[models]]\nid = "x"\nkind = "chat"\ncontext_size = 10\n',
     "entry 1 (id 'x'): context_size: Input should be greater than or equal to 64 (got 10)"),
    ('[[models]]\nid = "x"\nkind = "chat"\n[[models]]\nid = "y"\nkind = "chat"\ncolour = 1\n',
     "entry 2 (id 'y'): colour: Extra inputs are not permitted"),
    ('[[models]]\nid = "x"\nkind = "rerankr"\n',
     "entry 1 (id 'x'): kind: must be one of chat, embedding, speech, transcription"),
    ('[[models]]\nkind = "chat"\n', "entry 1: id: Field required"),
    ('[[models]]\nid = "x"\nkind = "chat"\nkeep_alive = "soon"\n',
     "entry 1 (id 'x'): keep_alive: Value error, keep_alive must be seconds"),
    ('[[models]]\nid = "x"\nkind = "embedding"\ndtype = "fp16"\n',
     "entry 1 (id 'x'): dtype: Input should be 'fp32' or 'bf16'"),
    ('[[models]]\nid = "x"\nkind = "chat"\n[[models]]\nid = "y"\nkind = "chat"\n'
     'aliases = ["x"]\n', "entry 2 (id 'y'): aliases: 'x' is already the id or an alias of "
     "entry 1 (id 'x')"),
    ('[[models]]\nid = " x"\nkind = "chat"\n', "entry 1 (id ' x'): id: String should match"),
    ('[[models]\nid = "x"\n', "not valid TOML: "),
    ('models = []\n', "models: List should have at least 1 item"),
])
def test_a_bad_file_is_one_line_naming_entry_and_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ModelsFileError) as raised:
        read_models_file(path)
    message = str(raised.value)
    assert expected in message, message
    assert message.startswith(f"LABS_MODELS_FILE {path}: ") and "\n" not in message


def test_a_variable_and_an_entry_of_the_same_id_clash(tmp_path):
    path = write(tmp_path, '[[models]]\nid = "m.gguf"\nkind = "chat"\n')
    with pytest.raises(CatalogError, match="served twice"):
        model_entries(Settings(models_file=path, model="m.gguf"))


def test_start_up_stops_with_one_line(tmp_path):
    path = write(tmp_path, '[[models]]\nid = "x"\nkind = "chat"\nparallel = 0\n')
    result = subprocess.run(
        [sys.executable, "-c", "from labs_api.settings import load_settings; load_settings()"],
        env={"LABS_MODELS_FILE": str(path), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": ":".join(sys.path)},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"labs-api: LABS_MODELS_FILE {path}: entry 1 (id 'x'): parallel: Input "
                     "should be greater than or equal to 1 (got 0)"]


@pytest.mark.parametrize(("value", "seconds"), [
    (0, 0.0), (-1, FOREVER), ("-1", FOREVER), (30, 30.0), ("90s", 90.0), ("5m", 300.0),
    ("1h", 3600.0), ("250ms", 0.25), (" 2.5 ", 2.5)])
def test_keep_alive_values(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", [-2, "1d", "", "x" * 10_000, True, None, [1], 1e12,
                                   float("nan"), "1e999"])
def test_keep_alive_refusals(value):
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)


def test_the_readme_example_file_is_valid(tmp_path):
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```toml\n# models.toml", 1)[1].split("```", 1)[0]
    entries = model_entries(settings_for(write(tmp_path, "# models.toml" + block)))
    by_id = {e.id: e for e in entries}
    assert [e.kind for e in entries].count("chat") == 2
    assert "TinyLlama/TinyLlama-1.1B-Chat-v1.0" in by_id["SmolLM2-135M-Instruct"].aliases
    assert by_id[DEFAULT_EMBEDDING_MODEL].kind == "embedding"
    assert by_id["en_US-joe-medium"].kind == "speech"
    assert by_id["whisper-tiny.en"].kind == "transcription"  # added: the file has none


def test_the_model_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("LABS_MAX_MODEL_MEMORY", "4GB")
    monkeypatch.setenv("LABS_MAX_LOADED_MODELS", "3")
    monkeypatch.setenv("LABS_KEEP_ALIVE", "5m")
    s = Settings()
    assert (int(s.max_model_memory), s.max_loaded_models, s.keep_alive) == (4 * 10**9, 3, 300)
    from labs_api.models import LoadLimits

    assert LoadLimits.from_settings(s).max_memory == 4 * 10**9


@pytest.mark.parametrize(("name", "value"), [
    ("LABS_MAX_MODEL_MEMORY", "lots"), ("LABS_MAX_LOADED_MODELS", "-1"),
    ("LABS_KEEP_ALIVE", "1d"), ("LABS_MODELS_FILE", "/no/such/file.toml"),
    ("LABS_MODELS_DIR", "/no/such/dir")])
def test_a_bad_model_setting_names_the_variable(monkeypatch, name, value):
    from labs_api.settings import load_settings

    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    message = str(stopped.value)
    assert name in message and "\n" not in message


def test_a_rerank_entry_serves_a_cross_encoder_under_its_id(tmp_path):
    (tmp_path / "ce").mkdir()
    path = write(tmp_path, '[[models]]\nid = "reranker"\nkind = "rerank"\nsource = "ce"\n'
                 'aliases = ["rerank-english-v3.0"]\nthreads = 1\n')
    registry = build_registry(settings_for(path))
    (slot,) = [s for s in registry.slots if s.kind == "rerank"]
    assert slot.model_id == "reranker" and slot.capabilities == ("rerank",)
    assert registry.find("rerank-english-v3.0") is slot
    source, model_id, own = slot.load.args
    assert (source, model_id) == (str((tmp_path / "ce").resolve()), "reranker")
    assert own.embedding_threads == 1


def test_a_rerank_entry_needs_a_source(tmp_path):
    path = write(tmp_path, '[[models]]\nid = "reranker"\nkind = "rerank"\n')
    with pytest.raises(ModelsFileError, match=r"entry 1 \(id 'reranker'\): source"):
        build_registry(settings_for(path))


def test_an_embedding_entry_chooses_its_backend(tmp_path):
    path = write(tmp_path, '[[models]]\nid = "mini-torch"\nkind = "embedding"\n'
                 'backend = "torch"\n')
    registry = build_registry(settings_for(path))
    slot = registry.find("mini-torch")
    own = slot.load.args[0]  # functools.partial(load_embedding_batcher, settings, id)
    assert own.embedding_backend == "torch" and "embedding_backend" in own.model_fields_set
    bad = write(tmp_path, '[[models]]\nid = "m"\nkind = "embedding"\nbackend = "tpu"\n')
    with pytest.raises(ModelsFileError, match=r"entry 1 \(id 'm'\): backend"):
        build_registry(settings_for(bad))
