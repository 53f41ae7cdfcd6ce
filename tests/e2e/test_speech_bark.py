"""Bark through transformers, on a tiny random-weight Bark model that the test builds and saves.

The weights are random, so the audio is noise; what is tested is the real loading and synthesis
path (processor, four sub-models, EnCodec, voice presets) and the server around it.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from labs_api.engines.speech.factory import load_speech_engine, speech_slot
from labs_api.settings import Settings
from tests.e2e.server import running_server

pytestmark = pytest.mark.slow

SEMANTIC_VOCAB = 20  # semantic tokens 0..19, 20 = end of semantic output
CODEBOOK = 16  # EnCodec codebook size
WORDS = "hello world this is a test of the tiny bark voice one two three four five . , ! ?"
PRESET = "v2/en_speaker_0"


def build_tiny_bark(directory: Path) -> Path:
    """Save a Bark model with 1-layer, 16-wide sub-models, a small BERT vocabulary, one voice
    preset and a generation config sized to match (a few dozen tokens per stage)."""
    import torch
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkProcessor,
        BarkSemanticConfig,
        BertTokenizer,
        EncodecConfig,
        GenerationConfig,
    )
    from transformers.models.bark.generation_configuration_bark import BarkGenerationConfig

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split()]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    text_offset = SEMANTIC_VOCAB + 8
    text_pad, semantic_infer = text_offset + len(vocab), text_offset + len(vocab) + 1
    coarse_pad, coarse_infer = SEMANTIC_VOCAB + 2 * CODEBOOK, SEMANTIC_VOCAB + 2 * CODEBOOK + 1
    tiny = {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "block_size": 128}
    config = BarkConfig(
        semantic_config=BarkSemanticConfig(input_vocab_size=semantic_infer + 1,
                                           output_vocab_size=SEMANTIC_VOCAB + 4, **tiny).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(input_vocab_size=coarse_infer + 1,
                                                 output_vocab_size=coarse_infer + 1,
                                                 **tiny).to_dict(),
        fine_acoustics_config=BarkFineConfig(input_vocab_size=CODEBOOK + 1,
                                             output_vocab_size=CODEBOOK, n_codes_total=8,
                                             n_codes_given=1, **tiny).to_dict(),
        # 75 frames/s at 24 kHz (hop 320) like the real EnCodec; 3 kbps = 10 codebooks of 4 bits
        codec_config=EncodecConfig(codebook_size=CODEBOOK, target_bandwidths=[3.0],
                                   hidden_size=8, num_filters=2, num_lstm_layers=1).to_dict(),
    )
    torch.manual_seed(0)
    model = BarkModel(config)
    generation = BarkGenerationConfig(
        semantic_config={"eos_token_id": SEMANTIC_VOCAB, "text_encoding_offset": text_offset,
                         "text_pad_token": text_pad, "semantic_infer_token": semantic_infer,
                         "semantic_vocab_size": SEMANTIC_VOCAB, "max_input_semantic_length": 16,
                         "max_new_tokens": 12, "min_new_tokens": 12, "do_sample": True},
        coarse_acoustics_config={"coarse_semantic_pad_token": coarse_pad,
                                 "coarse_infer_token": coarse_infer,
                                 "max_coarse_input_length": 16, "max_coarse_history": 40,
                                 "sliding_window_len": 20, "do_sample": True},
        fine_acoustics_config={"max_fine_history_length": 16, "max_fine_input_length": 32,
                               "n_fine_codebooks": 8},
        sample_rate=24_000,
        codebook_size=CODEBOOK,
    )
    # transformers 5.x cannot save a BarkGenerationConfig (its validate() trips over missing
    # attributes), but loads one: save the model with a plain config, then write Bark's.
    model.generation_config = GenerationConfig()
    model.save_pretrained(directory)
    (directory / "generation_config.json").write_text(json.dumps(generation.to_dict()))
    BarkProcessor(tokenizer=tokenizer).save_pretrained(directory)
    write_voice_preset(directory)
    return directory


def write_voice_preset(directory: Path) -> None:
    """One speaker preset in the layout BarkProcessor reads (speaker_embeddings_path.json)."""
    rng = np.random.default_rng(0)
    prompts = {
        "semantic_prompt": rng.integers(0, SEMANTIC_VOCAB, size=20),
        "coarse_prompt": rng.integers(0, CODEBOOK, size=(2, 30)),
        "fine_prompt": rng.integers(0, CODEBOOK, size=(8, 30)),
    }
    (directory / "speaker_embeddings" / "v2").mkdir(parents=True, exist_ok=True)
    entry = {}
    for key, array in prompts.items():
        relative = f"speaker_embeddings/{PRESET}_{key}.npy"
        np.save(directory / relative, array)
        entry[key] = relative
    (directory / "speaker_embeddings_path.json").write_text(
        json.dumps({"repo_or_path": str(directory), PRESET: entry})
    )


@pytest.fixture(scope="module")
def bark_dir(tmp_path_factory) -> Path:
    return build_tiny_bark(tmp_path_factory.mktemp("tiny-bark") / "bark")


@pytest.fixture(scope="module")
def bark_engine(bark_dir):
    engine = load_speech_engine(str(bark_dir), Settings(tts_model=str(bark_dir)))
    yield engine
    engine.close()


def test_a_directory_that_is_not_a_piper_voice_is_served_by_bark(bark_dir):
    slot = speech_slot(Settings(tts_model=str(bark_dir)))
    assert slot.kind == "speech" and slot.model_id == str(bark_dir)
    assert slot.description == "speech via bark"


def test_bark_engine_loads_and_synthesises_samples(bark_engine):
    from labs_api.engines.speech.bark_engine import BarkSpeechEngine

    assert isinstance(bark_engine, BarkSpeechEngine)
    assert bark_engine.sample_rate == 24_000
    assert bark_engine.voices == ("default", PRESET)
    samples = bark_engine.synthesize("hello world, this is a test.", "default")
    assert samples.dtype == np.float32 and samples.ndim == 1
    # 12 semantic tokens -> 18 coarse frames at 75 Hz -> 0.24 s of EnCodec output at 24 kHz
    assert samples.size == pytest.approx(0.24 * 24_000, rel=0.1)
    assert np.abs(samples).max() <= 1.0 and np.abs(samples).max() > 0


def test_bark_voice_preset_goes_through_the_speaker_prompt_path(bark_engine):
    samples = bark_engine.synthesize("hello world.", PRESET)
    assert samples.size > 0 and np.isfinite(samples).all()


def test_bark_streams_one_piece_per_sentence(bark_engine):
    async def collect() -> list[np.ndarray]:
        return [s async for s in bark_engine.stream("hello world. one two three. four five!",
                                                    "default")]

    pieces = asyncio.run(collect())
    assert len(pieces) == 3 and all(p.size > 0 for p in pieces)


def test_server_with_labs_tts_model_serves_bark_on_both_endpoints(bark_dir, tmp_path):
    model = str(bark_dir)
    with running_server({"LABS_TTS_MODEL": model}, log_path=tmp_path / "server.log") as url:
        listed = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        assert model in listed and "en_US-joe-medium" not in listed
        response = httpx.post(f"{url}/v1/tts", json={"text": "hello world. one two three.",
                                                     "model": model}, timeout=120)
        assert response.status_code == 200, response.text
        with wave.open(io.BytesIO(response.content)) as reader:
            assert reader.getframerate() == 24_000
            assert reader.getnframes() / 24_000 == pytest.approx(0.48, rel=0.15)  # 2 x 0.24 s
        speech = httpx.post(f"{url}/v1/audio/speech",
                            json={"model": "tts-1", "input": "hello world.", "voice": PRESET,
                                  "response_format": "pcm"}, timeout=120)
        assert speech.status_code == 200, speech.text
        assert len(speech.content) / 2 / 24_000 == pytest.approx(0.24, rel=0.15)
        shimmer = httpx.post(f"{url}/v1/audio/speech",
                             json={"model": model, "input": "hello.", "voice": "shimmer"},
                             timeout=120)
        assert shimmer.status_code == 200
