"""Every environment variable the server reads, typed, with its default, in one class."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CHAT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

TorchDtype = Literal["bf16", "fp16", "fp32", "auto"]


class Settings(BaseSettings):
    """Server configuration. Each field is read from ``LABS_<FIELD>`` (``HF_TOKEN`` as is)."""

    model_config = SettingsConfigDict(env_prefix="LABS_", extra="ignore", populate_by_name=True)

    # Server
    host: str = Field("0.0.0.0", description="Address to bind")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    preload_on_start: bool = Field(
        True, description="Load every model at start-up (false: load on first request)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Chat model
    model: str = Field(
        DEFAULT_CHAT_MODEL,
        min_length=1,
        description="Chat model: the bundled SmolLM2 name, a .gguf file, a HuggingFace id "
        "or a local model directory",
    )
    max_new_tokens: int = Field(128, ge=1, description="Default max_tokens for a request")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Default sampling temperature")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Default nucleus sampling mass")

    # Hardware (transformers engine)
    device_map: str = Field("auto", min_length=1, description="transformers device_map")
    torch_dtype: TorchDtype = Field("bf16", description="Weights dtype for transformers models")
    load_in_4bit: bool = Field(False, description="bitsandbytes 4-bit quantisation (CUDA only)")

    # llama.cpp engine
    n_ctx: int = Field(2048, ge=64, description="Context (tokens) of each llama.cpp slot")
    n_threads: int = Field(0, ge=0, description="llama.cpp threads (0: one per core)")
    parallel: int = Field(8, ge=1, le=256, description="Chat requests decoded together (slots)")
    max_queue: int = Field(64, ge=0, description="Chat requests that may wait for a slot")
    queue_timeout: float = Field(60.0, gt=0, description="Seconds a request may wait for a slot")

    # Embedding model
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL, min_length=1)

    # --- Embeddings engine and batching (see README "Embeddings and similarities") ---
    embedding_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="Weights dtype of the embedding model (fp16 overflows: not offered)"
    )
    embedding_threads: int = Field(
        0, ge=0, le=256, description="torch.set_num_threads for embeddings (0: torch's default)"
    )
    embedding_batch_size: int = Field(
        64, ge=1, le=2048, description="Most inputs in one model call (dynamic batching)"
    )
    embedding_max_wait_ms: float = Field(
        5.0, ge=0.0, le=1000.0, description="Longest an input waits for others to batch with"
    )
    embedding_max_queue: int = Field(
        4096, ge=1, description="Most inputs waiting for the model; past it requests get 503"
    )
    embedding_truncate: bool = Field(
        False, description="Truncate over-long inputs instead of rejecting them with 400"
    )
    # --- end of embeddings block ---

    # Authentication for gated HuggingFace models
    hf_token: str | None = Field(
        None, validation_alias=AliasChoices("HF_TOKEN", "LABS_HF_TOKEN"), repr=False
    )

    # --- Speech (text-to-speech; see README "Speech") ---
    tts_model: str = Field(
        "en_US-joe-medium",
        min_length=1,
        description="Speech model: the bundled Piper voice en_US-joe-medium, a Piper .onnx voice "
        "file, or Bark (suno/bark, suno/bark-small or a local directory) through transformers",
    )
    tts_threads: int = Field(
        1, ge=1, le=64, description="onnxruntime threads of the Piper voice (1 leaves the other "
        "cores to the chat model)"
    )
    # --- end of speech block ---


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return "HF_TOKEN" if field == "hf_token" else f"LABS_{field.upper()}"


def describe_error(error: ValidationError) -> str:
    """One line per bad variable: its name, the value given and what it accepts."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        value = item.get("input")
        lines.append(f"invalid {env_name(field)}={value!r}: {item['msg']}")
    return "; ".join(lines)


def load_settings() -> Settings:
    """Read the environment. Raises ``SystemExit`` with a one-line message on a bad value."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"labs-api: {describe_error(exc)}") from None
