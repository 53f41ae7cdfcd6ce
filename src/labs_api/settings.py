"""Every environment variable the server reads, typed, with its default, in one class."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    AliasChoices,
    ByteSize,
    DirectoryPath,
    Field,
    FilePath,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from labs_api.keep_alive import KeepAlive

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
    root_path: str = Field(
        "", pattern=r"^(/\S*[^/\s])?$",
        description="The path prefix a reverse proxy serves the API under (uvicorn's "
        "--root-path), e.g. /api; empty: none"
    )

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
    n_ctx: int = Field(2048, ge=64, description="KV cache tokens per llama.cpp slot (the "
                       "cache holds n_ctx x parallel tokens, shared by all slots when "
                       "kv_unified)")
    kv_unified: bool = Field(
        True, description="One llama.cpp KV cache shared by all slots: a request may use up "
        "to the model's trained context while the cache has room (false: n_ctx each)")
    prompt_cache_mb: int = Field(
        1024, ge=0, le=1 << 20, description="Host memory (MiB) for finished conversations' "
        "llama.cpp KV state, so a prompt that starts with one is copied back instead of "
        "evaluated again (0: off)")
    n_threads: int = Field(0, ge=0, description="llama.cpp threads (0: one per core)")
    llama_poll: int = Field(
        0, ge=0, le=100, description="llama.cpp built without OpenMP: how long its idle "
        "threads poll for the next decode before they sleep (0: sleep at once, leaving the "
        "core to the HTTP side; 100: poll longest). An OpenMP build ignores it")
    parallel: int = Field(8, ge=1, le=256, description="Chat requests decoded together (slots)")
    max_queue: int = Field(64, ge=0, description="Chat requests that may wait for a slot")
    queue_timeout: float = Field(60.0, gt=0, description="Seconds a request may wait for a slot")

    # Engine worker processes (labs_api.workers)
    engine_workers: bool = Field(
        True, description="Run each model's engine in a supervised worker process (false: in "
        "the server process, where an engine crash ends the server)")
    engine_stall_seconds: float = Field(
        60.0, gt=0, description="A worker that holds requests and makes no progress this long "
        "is killed and restarted")

    # Embedding model
    embedding_model: str = Field(DEFAULT_EMBEDDING_MODEL, min_length=1)

    # --- Embeddings engine and batching (see README "Embeddings and similarities") ---
    embedding_backend: Literal["openvino", "onnx", "onnx-int8", "torch"] = Field(
        "openvino", description="What runs the embedding model: openvino (OpenVINO compiles a "
        "local ONNX export made at first load and cached; bf16 on CPUs with AMX or "
        "AVX512-BF16, fp32 elsewhere), onnx (that export on ONNX Runtime, fp32), onnx-int8 (the "
        "export with int8 weights) or torch (the reference). Not set: openvino, else onnx, "
        "else torch when one cannot be loaded"
    )
    embedding_precision: Literal["auto", "f32"] = Field(
        "auto", description="openvino backend: auto (OpenVINO's choice for this CPU: bf16 "
        "where AMX or AVX512-BF16 runs it, f32 elsewhere) or f32 everywhere"
    )
    embedding_onnx_fused: bool = Field(
        False, description="onnx backend: fuse the export's attention, LayerNorm and GELU into "
        "ONNX Runtime's own ops (BERT-like models; others keep the plain export). Off: it "
        "measured 8% slower on a 2-core Xeon"
    )
    embedding_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="Weights dtype of the embedding model (fp16 overflows: not offered)"
    )
    embedding_threads: int = Field(
        0, ge=0, le=256,
        description="Threads of the embedding model (torch or ONNX Runtime; 0: one per core)"
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

    # Rerank model (README "Rerank"): unset, /v1/rerank scores by the embedding model's cosine
    rerank_model: str | None = Field(
        None, min_length=1, description="A sentence-transformers CrossEncoder for /v1/rerank: "
        "a HuggingFace id or a local directory; unset: the embedding model's cosine similarity")

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

    # --- Speech-to-text (see README "Speech-to-text") ---
    stt_model: str = Field(
        "whisper-tiny.en",
        min_length=1,
        description="Transcription model: the bundled whisper-tiny.en, whisper-base (extra "
        "stt-multilingual), a CTranslate2 Whisper directory, or a HuggingFace id of a "
        "CTranslate2 Whisper model (faster-whisper)",
    )
    stt_threads: int = Field(
        1, ge=1, le=64, description="CTranslate2 threads of the Whisper model (1 leaves the "
        "other cores to the chat model)"
    )
    stt_compute_type: Literal["int8", "int8_float32", "float32", "float16", "default"] = Field(
        "float32", description="CTranslate2 compute type of the Whisper model"
    )
    stt_beam_size: int = Field(5, ge=1, le=16, description="Beam size of Whisper decoding")
    stt_max_audio_seconds: float = Field(
        600.0, gt=0, le=36000, description="Longest audio accepted for transcription (longer: "
        "400), which bounds the work one request can ask for"
    )
    stt_max_queue: int = Field(
        8, ge=0, le=1024, description="Transcriptions that may wait while others run; one "
        "more gets 503"
    )
    # --- end of speech-to-text block ---
    # --- speech admission (issue #12) ---
    tts_max_queue: int = Field(
        16, ge=1, le=10_000, description="speech requests synthesised at once (taking turns "
        "sentence by sentence); one more gets 503 with Retry-After"
    )
    # --- end of speech admission block ---

    # --- operations and security (see README "Operations and security") ---
    api_key: str | None = Field(
        None, repr=False,
        description="API key(s) every /v1 request must send as 'Authorization: Bearer <key>'; "
        "a comma-separated list for several. Unset: no authentication",
    )
    api_key_file: FilePath | None = Field(
        None, description="A file of API keys, one per line ('#' starts a comment)"
    )
    rate_limit: str | None = Field(
        None,
        description="Requests allowed per API key (or per client address without keys) on /v1, "
        "e.g. '60/minute' or '10/second;1000/day'. Unset: no limit",
    )
    cors_origins: str | None = Field(
        None, description="Comma-separated origins allowed by CORS ('*' for any). Unset: no CORS"
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=0, description="Largest request body in bytes (413 past it; 0: no "
        "limit)"
    )
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics")
    ui: bool = Field(True, description="Serve the web playground at / (false: the API alone)")

    # --- request limits and connection bounds (see README "Limits") ---
    max_messages: int = Field(
        4096, ge=1, description="Most messages in one chat request (400 past it)"
    )
    max_prompt_chars: int = Field(
        1_000_000, ge=1, description="Most characters of text in one chat or completions "
        "request, counted before tokenizing (400 past it)"
    )
    max_embedding_chars: int = Field(
        4_000_000, ge=1, description="Most characters of text in one embeddings or "
        "similarities request (400 past it)"
    )
    max_tools: int = Field(128, ge=1, description="Most tools in one chat request")
    max_schema_bytes: int = Field(
        65_536, ge=64, description="Largest JSON schema (response_format and every tool's "
        "parameters together, serialized) in one request"
    )
    max_schema_properties: int = Field(
        512, ge=1, description="Most object properties in the JSON schemas of one request"
    )
    max_schema_enum_values: int = Field(
        1024, ge=1, description="Most enum/const values in the JSON schemas of one request"
    )
    max_schema_depth: int = Field(
        32, ge=1, le=256, description="Deepest nesting (objects and arrays) of the JSON "
        "schemas of one request"
    )
    max_connections: int = Field(
        512, ge=1, description="Open client connections; one more gets 503 and is closed"
    )
    header_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds a client has to send a request's head "
        "(request line and headers) before it is disconnected"
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, le=600, description="Seconds an idle keep-alive connection stays open"
    )
    # --- end of request limits block ---

    @field_validator("api_key", "rate_limit", "cors_origins", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str | None) -> str | None:
        if value is not None:
            from limits import parse_many

            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    "expected a rate such as '60/minute', '10 per second' or '10/second;1000/day'"
                ) from None
        return value

    def api_keys(self) -> list[str]:
        """Every accepted API key, from LABS_API_KEY and LABS_API_KEY_FILE (empty: auth off)."""
        keys = [k.strip() for k in (self.api_key or "").split(",") if k.strip()]
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text(encoding="utf-8").splitlines()
            keys += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return list(dict.fromkeys(keys))

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]
    # --- end of operations and security block ---

    # --- many models (issue 15; see README "Many models") ---
    models_file: FilePath | None = Field(
        None, description="A TOML file of model entries (labs_api.models_file); the single-"
        "model variables still add their entry where set, or for a kind the file lacks")
    models_dir: DirectoryPath | None = Field(
        None, description="Every *.gguf in this folder is a chat model named after its file")
    max_loaded_models: int = Field(
        0, ge=0, le=1000, description="Most models loaded at once; past it the least "
        "recently used idle one is unloaded (0: no limit)")
    max_model_memory: ByteSize | None = Field(
        None, description="Most memory (RSS) the loaded models' workers may hold, e.g. "
        "'6GB'; past it the least recently used idle models are unloaded (unset: no limit)")
    keep_alive: KeepAlive = Field(
        -1, description="Default idle time before a model is unloaded: seconds, a duration "
        "('5m'), -1 never, 0 after each request")

    @field_validator("models_file", "models_dir", "max_model_memory", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
    # --- end of many models block ---
    # --- Responses API (see README "Responses") ---
    data_dir: str | None = Field(
        None, min_length=1, description="Where stored responses live (an SQLite file in this "
        "folder); ':memory:' keeps them in memory only. Unset: $XDG_DATA_HOME/labs-api or "
        "~/.local/share/labs-api")
    responses_ttl: float = Field(
        30 * 24 * 3600.0, gt=0, description="Seconds a stored response is kept (OpenAI: 30 "
        "days)")
    responses_max_output_tokens: int = Field(
        1024, ge=1, description="max_output_tokens of a response that sets none (agents "
        "such as Codex treat a reply cut short as an error, so more than chat's default)")
    responses_max_stored: int = Field(
        10_000, ge=1, description="Most stored responses; past it the oldest go first")
    responses_max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="Most characters of JSON all stored responses hold "
        "together (1 GiB); past it the oldest go first")
    # --- end of Responses API block ---

    # --- Ray Serve (`labs-api serve --ray`; see README "Scaling out") ---
    ray_proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode", description="Where Ray Serve runs its HTTP proxy on LABS_HOST:LABS_PORT: "
        "every node that has a replica, or the head node only"
    )
    ray_ingress_replicas: int = Field(
        1, ge=1, le=256, description="Replicas of the ingress (HTTP, validation, SSE; no model)"
    )
    ray_ingress_num_cpus: float = Field(0.25, ge=0, description="CPUs Ray reserves per ingress")
    ray_ingress_max_ongoing_requests: int = Field(
        1000, ge=1, description="Requests one ingress replica handles at once"
    )
    ray_chat_replicas: int = Field(
        1, ge=1, le=256, description="Chat replicas (the minimum when autoscaling)"
    )
    ray_chat_max_replicas: int = Field(
        0, ge=0, le=256, description="Autoscale chat up to this many replicas (0: fixed count)"
    )
    ray_chat_target_ongoing_requests: float | None = Field(
        None, gt=0, description="Autoscaling target per chat replica (unset: LABS_PARALLEL)"
    )
    ray_chat_max_ongoing_requests: int | None = Field(
        None, ge=1, description="Requests one chat replica takes at once (unset: "
        "LABS_PARALLEL + LABS_MAX_QUEUE, so the engine's own queue and its 503s apply)"
    )
    ray_chat_num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per chat replica")
    ray_chat_num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per chat replica")
    ray_embedding_replicas: int = Field(
        1, ge=1, le=256, description="Embedding replicas (the minimum when autoscaling)"
    )
    ray_embedding_max_replicas: int = Field(
        0, ge=0, le=256, description="Autoscale embeddings up to this many replicas (0: fixed)"
    )
    ray_embedding_target_ongoing_requests: float | None = Field(
        None, gt=0, description="Autoscaling target per embedding replica (unset: 16)"
    )
    ray_embedding_max_ongoing_requests: int | None = Field(
        None, ge=1, description="Requests one embedding replica takes at once (unset: 256)"
    )
    ray_embedding_num_cpus: float = Field(0.5, ge=0, description="CPUs per embedding replica")
    ray_embedding_num_gpus: float = Field(0.0, ge=0, description="GPUs per embedding replica")
    ray_speech_replicas: int = Field(
        1, ge=1, le=256, description="Speech replicas (the minimum when autoscaling)"
    )
    ray_speech_max_replicas: int = Field(
        0, ge=0, le=256, description="Autoscale speech up to this many replicas (0: fixed)"
    )
    ray_speech_target_ongoing_requests: float | None = Field(
        None, gt=0, description="Autoscaling target per speech replica (unset: 2)"
    )
    ray_speech_max_ongoing_requests: int | None = Field(
        None, ge=1, description="Requests one speech replica takes at once (unset: 16)"
    )
    ray_speech_num_cpus: float = Field(0.25, ge=0, description="CPUs per speech replica")
    ray_speech_num_gpus: float = Field(0.0, ge=0, description="GPUs per speech replica")
    # (a max_replicas below its replica count is refused by labs_api.ray_serve at launch)

    # --- end of Ray Serve block ---


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
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"labs-api: {describe_error(exc)}") from None
    from labs_api.catalog import CatalogError, model_entries

    try:
        model_entries(settings)  # a bad models file stops start-up here, in one line
    except CatalogError as exc:
        raise SystemExit(f"labs-api: {exc}") from None
    return settings
