"""Request and response schemas of the rerank endpoints."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from labs_api.api.request_model import RequestModel

MAX_RERANK_DOCUMENTS = 1000
#: The query is read once per document by a cross-encoder: it is kept short.
MAX_QUERY_CHARS = 8192


def check_query(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some text")
    if len(value) > MAX_QUERY_CHARS:
        raise ValueError(f"at most {MAX_QUERY_CHARS} characters, got {len(value)}")
    return value


def check_documents(value: Any, field: str) -> Any:
    """1 to 1000 non-empty texts (strings, or ``{"text"}`` objects where allowed)."""
    if not isinstance(value, list):
        raise ValueError(f"{field} must be a list")
    if not value:
        raise ValueError(f"{field} must hold at least one document")
    if len(value) > MAX_RERANK_DOCUMENTS:
        raise ValueError(f"at most {MAX_RERANK_DOCUMENTS} documents per request, "
                         f"got {len(value)}")
    return value


class DocumentIn(RequestModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class RerankRequest(RequestModel):
    """Cohere's (v1 and v2) and Jina's rerank request."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "query": "What do dogs eat?",
            "documents": ["Dogs eat meat and kibble.", "The stock market fell today."],
            "top_n": 1, "return_documents": True}]},
    )

    model: str | None = Field(
        None, min_length=1, description="The rerank model (LABS_RERANK_MODEL) or the embedding "
        "model (cosine similarity); default: the rerank model if one is served, else cosine")
    query: str = Field(description=f"The search query (at most {MAX_QUERY_CHARS} characters)")
    documents: list[str | DocumentIn] = Field(
        description=f"1 to {MAX_RERANK_DOCUMENTS} texts, as strings or {{\"text\"}} objects")
    top_n: int | None = Field(None, ge=1, description="Return only the best N (default: all)")
    return_documents: bool = Field(False, description="Include each document's text")

    _check_query = field_validator("query")(check_query)

    @field_validator("documents", mode="before")
    @classmethod
    def _check_documents(cls, value: Any) -> Any:
        return check_documents(value, "documents")

    @field_validator("documents")
    @classmethod
    def _not_empty(cls, value: list[str | DocumentIn]) -> list[str | DocumentIn]:
        empty = [i for i, d in enumerate(value) if not (d if isinstance(d, str) else d.text)]
        if empty:
            raise ValueError(f"documents must not be empty (indexes {empty[:10]})")
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class DocumentOut(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: DocumentOut | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_document(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("document") is None:
            data.pop("document", None)
        return data


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class BilledUnits(BaseModel):
    search_units: int = 1


class ApiVersion(BaseModel):
    version: str = "2"


class RerankMeta(BaseModel):
    api_version: ApiVersion = ApiVersion()
    billed_units: BilledUnits = BilledUnits()


class RerankResponse(BaseModel):
    id: str
    object: Literal["rerank"] = "rerank"
    model: str = Field(description="What scored: the cross-encoder's id, or the embedding "
                       "model's id followed by '(embedding cosine similarity)'")
    results: list[RerankResult] = Field(description="Best first")
    usage: RerankUsage
    meta: RerankMeta = RerankMeta()


class TEIRerankRequest(RequestModel):
    """Text Embeddings Inference's ``POST /rerank``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"query": "What do dogs eat?",
                                         "texts": ["Dogs eat meat.", "Stocks fell."]}]},
    )

    model: str | None = Field(None, min_length=1, description="As in /v1/rerank (optional)")
    query: str
    texts: list[str] = Field(description=f"1 to {MAX_RERANK_DOCUMENTS} texts")
    raw_scores: bool = Field(False, description="The cross-encoder's logits, not its sigmoid")
    return_text: bool = Field(False, description="Include each text")

    _check_query = field_validator("query")(check_query)

    @field_validator("texts", mode="before")
    @classmethod
    def _check_texts(cls, value: Any) -> Any:
        return check_documents(value, "texts")

    @field_validator("texts")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        empty = [i for i, text in enumerate(value) if not text]
        if empty:
            raise ValueError(f"texts must not be empty (indexes {empty[:10]})")
        return value


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_text(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("text") is None:
            data.pop("text", None)
        return data
