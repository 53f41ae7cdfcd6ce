"""Request and response schemas of ``POST /v1/embeddings`` and ``POST /v1/similarities``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labs_api.api.request_model import RequestModel, keep_alive_field
from labs_api.engines.embedding.base import EmbeddingTask
from labs_api.keep_alive import KeepAlive

MAX_EMBEDDING_INPUTS = 2048  # as OpenAI
MAX_SIMILARITY_SENTENCES = 256  # a 256×256 matrix is ~1.3 MB of JSON

TOKEN_ARRAYS_UNSUPPORTED = (
    "token-id arrays are not supported: send text, which the server tokenizes with its own "
    "model's tokenizer (LangChain's OpenAIEmbeddings: set check_embedding_ctx_length=False)"
)


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    )


def check_texts(value: Any, *, limit: int, field: str, noun: str) -> Any:
    """Shared checks of the texts of a request: type, count, no empty strings, no token ids."""
    if _is_token_array(value) or (
        isinstance(value, list) and any(_is_token_array(item) for item in value)
    ):
        raise ValueError(TOKEN_ARRAYS_UNSUPPORTED)
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{field} must contain at least one string")
        if len(value) > limit:
            raise ValueError(f"at most {limit} {noun} per request, got {len(value)}")
        wrong = [i for i, item in enumerate(value) if not isinstance(item, str)]
        if wrong:
            raise ValueError(f"{field} must hold only strings (not at indexes {wrong[:10]})")
        empty = [i for i, item in enumerate(value) if item == ""]
        if empty:
            raise ValueError(f"{field} must not contain empty strings (indexes {empty[:10]})")
    elif value == "":
        raise ValueError(f"{field} must not be an empty string")
    elif not isinstance(value, str):
        raise ValueError(f"{field} must be a string or a list of strings")
    return value


class EmbeddingRequest(RequestModel):
    """OpenAI's CreateEmbeddingRequest, text only; unknown fields are rejected (422)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"input": ["Hello world", "How are you?"],
                 "model": "sentence-transformers/all-MiniLM-L6-v2", "encoding_format": "float"}
            ]
        },
    )

    input: str | list[str] = Field(
        description=f"A string, or a list of 1 to {MAX_EMBEDDING_INPUTS} non-empty strings"
    )
    model: str | None = Field(
        None, min_length=1, description="Embedding model id (default: the served embedding model)"
    )
    keep_alive: KeepAlive | None = keep_alive_field()
    encoding_format: Literal["float", "base64"] | None = Field(
        "float", description="float: a list of numbers; base64: little-endian float32 bytes"
    )
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first N dimensions, re-normalised (Matryoshka)"
    )
    user: str | None = Field(None, description="End-user id (accepted, not used)")
    input_type: Literal["query", "document"] | None = Field(
        None,
        description="Extension: embed as a search query or as a document (the default); "
        "matters for models with their own prompts, such as EmbeddingGemma",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _check_input(cls, value: Any) -> Any:
        return check_texts(value, limit=MAX_EMBEDDING_INPUTS, field="input", noun="inputs")

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def task(self) -> EmbeddingTask:
        return self.input_type or "document"


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str = Field(description="floats, or a base64 string")
    index: int


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class SimilarityRequest(RequestModel):
    """The spec's extension: every sentence against every other."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"sentences": ["Hello world", "Hi there", "Good morning", "How are you?"],
                 "model": "sentence-transformers/all-MiniLM-L6-v2"}
            ]
        },
    )

    sentences: list[str] = Field(
        description=f"1 to {MAX_SIMILARITY_SENTENCES} non-empty strings"
    )
    model: str | None = Field(
        None, min_length=1, description="Embedding model id (default: the served embedding model)"
    )
    keep_alive: KeepAlive | None = keep_alive_field()

    @field_validator("sentences", mode="before")
    @classmethod
    def _check_sentences(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("sentences must be a list of strings")
        return check_texts(value, limit=MAX_SIMILARITY_SENTENCES, field="sentences",
                           noun="sentences")


class SimilarityResponse(BaseModel):
    similarities: list[list[float]] = Field(description="N×N cosine similarities")
    model: str
    shape: list[int] = Field(description="[N, N]")
