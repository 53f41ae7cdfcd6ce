"""Bark (suno/bark, suno/bark-small or a local directory) through transformers + torch."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from labs_api.engines.optional import require
from labs_api.engines.speech.base import SpeechEngine

log = logging.getLogger("labs_api.bark")

DEFAULT_VOICE = "default"


def bark_device(torch: Any, device_map: str) -> str:
    """Where to run Bark: ``LABS_DEVICE_MAP`` when it names a device, else CUDA if present."""
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device_map


class BarkSpeechEngine(SpeechEngine):
    """Bark's four models (text → semantic → coarse → fine → EnCodec), fp32, one sentence a call.

    Voices: ``default`` (no speaker prompt, Bark picks a random speaker each sentence) and
    every speaker preset the model directory ships (``v2/en_speaker_6``, ...).
    """

    # Bark speaks about 13 s per call; a longer sentence is cut at a clause or a word.
    max_sentence_chars = 200

    def __init__(self, model_id: str, source: str, *, device_map: str = "auto",
                 hf_token: str | None = None) -> None:
        super().__init__()
        self._torch = torch = require("torch")
        transformers = require("transformers")
        self.model_id = model_id
        self._device = bark_device(torch, device_map)
        self._processor = transformers.BarkProcessor.from_pretrained(source, token=hf_token)
        self._model = transformers.BarkModel.from_pretrained(source, token=hf_token,
                                                             dtype=torch.float32)
        self._model.to(self._device)
        self._model.eval()
        self.sample_rate = int(
            getattr(self._model.generation_config, "sample_rate", None)
            or self._model.config.codec_config.sampling_rate
        )
        presets = sorted(self._processor.available_voice_presets,
                         key=lambda name: (not name.startswith("v2/en_"), name))
        self.voices = (DEFAULT_VOICE, *presets)
        # Presets are named like "v2/en_speaker_6": the language is the part before "_speaker".
        self.voice_languages = {name: name.rsplit("/", 1)[-1].split("_speaker")[0]
                                for name in presets if "_speaker" in name}

    def synthesize(self, text: str, voice: str) -> np.ndarray:
        preset = None if voice == DEFAULT_VOICE else voice
        inputs = self._processor(text, voice_preset=preset)
        if self._device != "cpu":
            inputs = inputs.to(self._device)
        with self._torch.inference_mode():
            audio = self._model.generate(**inputs)
        samples = audio[0].detach().float().cpu().numpy()
        return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
