"""Schemathesis fuzzing of our /openapi.json: no generated request may get a 5xx or hang.

Two runs over every operation of the schema:

- **fake engines, in-process** (ASGI, no sockets): many examples per operation, since a request
  costs a millisecond or so. Checks the whole HTTP layer: validation, error handlers, the
  streaming and audio paths, the operations middleware.
- **the real server** (a subprocess on the bundled models): fewer examples, so that generated
  requests that pass validation really run llama.cpp, MiniLM and Piper. Bodies are trimmed where
  a valid value would only cost time (``max_tokens``, ``n``, the length of text to speak), so the
  run stays within a few minutes on 2 cores; invalid values are left as generated.

Each run has examples (from the schema), schemathesis' coverage phase (boundary values, wrong
types, missing fields, other methods) and hypothesis' generated examples, positive and negative,
without shrinking. Generation is derandomized so that CI runs the same requests each time;
``LABS_FUZZ_EXAMPLES`` / ``LABS_FUZZ_REAL_EXAMPLES`` raise the counts and ``LABS_FUZZ_RANDOM=1``
draws new requests on every run, for a longer local search.
A request that takes longer than its timeout fails the test as a hang.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from labs_api.app import create_app
from labs_api.engines.embedding.batcher import EmbeddingBatcher
from labs_api.models import ModelRegistry, ModelSlot
from labs_api.settings import Settings
from tests.e2e.server import running_server
from tests.fake_transcription import FakeTranscriptionEngine
from tests.fakes import FakeChatEngine
from tests.unit.test_embeddings_batcher import FakeEmbeddingEngine
from tests.unit.test_speech_http import FakeSpeechEngine

pytestmark = pytest.mark.slow

# The fake engines carry the ids of the bundled models, so one hook serves both runs and the
# schema's own examples (which name the bundled models) reach an engine.
CHAT = "SmolLM2-135M-Instruct"
EMBEDDING = "sentence-transformers/all-MiniLM-L6-v2"
SPEECH = "en_US-joe-medium"
TRANSCRIPTION = "whisper-tiny.en"
SERVED_MODEL = {
    "/v1/chat/completions": CHAT, "/v1/completions": CHAT, "/v1/responses": CHAT,
    "/v1/embeddings": EMBEDDING, "/v1/similarities": EMBEDDING,
    "/v1/audio/speech": SPEECH, "/v1/tts": SPEECH,
    "/v1/audio/transcriptions": TRANSCRIPTION, "/v1/audio/translations": TRANSCRIPTION,
    "/tokenize": CHAT, "/detokenize": CHAT, "/v1/messages": CHAT,
    "/v1/messages/count_tokens": CHAT,
    "/v1/rerank": EMBEDDING, "/v2/rerank": EMBEDDING, "/rerank": EMBEDDING,
}

FAKE_EXAMPLES = int(os.environ.get("LABS_FUZZ_EXAMPLES", "200"))
REAL_EXAMPLES = int(os.environ.get("LABS_FUZZ_REAL_EXAMPLES", "50"))
FAKE_TIMEOUT_S = 10
REAL_TIMEOUT_S = 60

FUZZ_SETTINGS: dict[str, Any] = dict(
    deadline=None, derandomize=os.environ.get("LABS_FUZZ_RANDOM") != "1", database=None,
    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


class KeptRegistry(ModelRegistry):
    """Schemathesis ends the app's lifespan after each operation, and the lifespan closes the
    registry: this one stays open until the module is done."""

    def close(self) -> None:
        pass

    def close_for_real(self) -> None:
        super().close()


def fake_registry() -> KeptRegistry:
    batcher = EmbeddingBatcher(FakeEmbeddingEngine(EMBEDDING), batch_size=8, max_wait=0.0,
                               max_queue=64, warm_up=False)
    return KeptRegistry([  # (unloading=False: keep_alive and /unload leave them loaded)
        ModelSlot(model_id=CHAT, kind="chat", load=lambda: None, state="ready",
                  engine=FakeChatEngine(CHAT, context_length=2048)),
        ModelSlot(model_id=EMBEDDING, kind="embedding", load=lambda: None, state="ready",
                  engine=batcher),
        ModelSlot(model_id=SPEECH, kind="speech", load=lambda: None, state="ready",
                  engine=FakeSpeechEngine(SPEECH)),
        ModelSlot(model_id=TRANSCRIPTION, kind="transcription", load=lambda: None,
                  state="ready", engine=FakeTranscriptionEngine(TRANSCRIPTION)),
    ], unloading=False)


# Schemas are loaded at import: schemathesis' fixture-based (lazy) schemas do not work with
# pytest 9 (they set a private attribute of the test item that pytest 9 no longer has).
REGISTRY = fake_registry()
FAKE_APP = create_app(Settings(preload_on_start=False, data_dir=":memory:"), REGISTRY)
fake = schemathesis.openapi.from_asgi("/openapi.json", FAKE_APP)
# The real server serves the same routes; its requests go to the base URL given at call time.
real = schemathesis.openapi.from_dict(FAKE_APP.openapi())


@pytest.fixture(scope="module", autouse=True)
def close_registry():
    yield
    REGISTRY.close_for_real()


def with_served_model(context, body: Any) -> st.SearchStrategy:
    """Three times in four, name the model the operation serves (instead of a random string,
    which only ever gets a 404) so that the rest of the body reaches the engine."""
    path = context.operation.path if context.operation else None
    if path in SERVED_MODEL and isinstance(body, dict) and isinstance(body.get("model"), str):
        served = {**body, "model": SERVED_MODEL[path]}
        return st.sampled_from([served, served, served, body])
    return st.just(body)


def with_served_model_id(context, parameters: Any) -> st.SearchStrategy:
    """``GET /v1/models/{model_id}``: a served id half of the time, else the random one."""
    if isinstance(parameters, dict) and "model_id" in parameters:
        return st.sampled_from([{**parameters, "model_id": served}
                                for served in (CHAT, EMBEDDING, SPEECH)] + [parameters] * 3)
    return st.just(parameters)


for schema in (fake, real):
    schema.hook("flatmap_body")(with_served_model)
    schema.hook("flatmap_path_parameters")(with_served_model_id)


MAX_REAL_TOKENS = 8
MAX_REAL_CHOICES = 2
MAX_REAL_PROMPTS = 2
MAX_REAL_SPEECH_CHARS = 120


def cheap(body: Any, path: str) -> Any:
    """A body that asks the real models for less work; values the server must reject stay."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(field)
        # An integral float (1e9) is an integer to the server too: 1988 tokens take a minute.
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and value > MAX_REAL_TOKENS:
            body[field] = MAX_REAL_TOKENS
    if path in ("/v1/chat/completions", "/v1/completions"):
        body.setdefault("max_tokens", MAX_REAL_TOKENS)
    for field, most in (("n", MAX_REAL_CHOICES), ("best_of", MAX_REAL_CHOICES)):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > most:
            body[field] = most
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        body["prompt"] = prompt[:MAX_REAL_PROMPTS]
    for field in ("input", "text"):
        value = body.get(field)
        if path in ("/v1/audio/speech", "/v1/tts") and isinstance(value, str) \
                and len(value) <= 4096 and value[:MAX_REAL_SPEECH_CHARS].strip():
            body[field] = value[:MAX_REAL_SPEECH_CHARS]
    return body


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    env = {"LABS_MAX_NEW_TOKENS": str(MAX_REAL_TOKENS), "LABS_LOG_LEVEL": "warning",
           "LABS_RESPONSES_MAX_OUTPUT_TOKENS": str(MAX_REAL_TOKENS),
           "LABS_DATA_DIR": str(tmp_path_factory.mktemp("fuzz-data"))}
    with running_server(env, log_path=log) as url:
        yield url


@fake.parametrize()
@settings(max_examples=FAKE_EXAMPLES, **FUZZ_SETTINGS)
def test_fake_engines_never_fail(case):
    case.call_and_validate(checks=[not_a_server_error], timeout=FAKE_TIMEOUT_S)


@real.parametrize()
@settings(max_examples=REAL_EXAMPLES, **FUZZ_SETTINGS)
def test_real_server_never_fails(case, real_server):
    case.body = cheap(case.body, case.operation.path)
    case.call_and_validate(base_url=real_server, checks=[not_a_server_error],
                           timeout=REAL_TIMEOUT_S)


@pytest.mark.parametrize("prompt", [[1557, -3], [1557, 10**9], [[1, 2], [3, -5012438212305]]])
def test_token_ids_outside_the_vocabulary_are_400(real_server, prompt):
    """Found by this fuzzing: llama.cpp failed to decode such a prompt (500)."""
    import httpx

    response = httpx.post(f"{real_server}/v1/completions", timeout=REAL_TIMEOUT_S,
                          json={"model": CHAT, "prompt": prompt, "max_tokens": 2})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "prompt"


def json_schema_format(schema: dict) -> dict:
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": schema}}}


def required_tool(parameters: dict) -> dict:
    return {"tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
            "tool_choice": "required"}


# 30,000 is past the limit and safe to send even without it: llama.cpp's grammar parser crashed
# the server on it (a count of 10^9 took all the machine's memory instead: never send that).
HUGE = 30_000


@pytest.mark.parametrize(("extra", "param"), [
    (json_schema_format({"type": "string", "maxLength": HUGE}), "response_format"),
    (json_schema_format({"type": "string", "pattern": f"^a{{0,{HUGE}}}$"}), "response_format"),
    (json_schema_format({"type": "array", "items": {"type": "integer"}, "maxItems": HUGE}),
     "response_format"),
    (required_tool({"type": "object", "properties": {"a": {"type": "string", "minLength": HUGE}}}),
     "tool_choice"),
])
def test_json_schemas_with_huge_repetition_counts_are_400(real_server, extra, param):
    """Found while fuzzing by hand: a count in a schema became that many nested grammar rules."""
    import httpx

    response = httpx.post(f"{real_server}/v1/chat/completions", timeout=REAL_TIMEOUT_S, json={
        "model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(f"{real_server}/health").status_code == 200
