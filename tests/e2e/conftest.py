"""One real server on the bundled default models, shared by every end-to-end test; and the
bundled GGUF loaded in-process, for tests of the llama.cpp layer itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.server import running_server


@pytest.fixture(scope="module")
def bundled_llama():
    """The bundled SmolLM2 GGUF as a small two-sequence, two-thread ``LlamaCppModel``."""
    from labs_api.engines.chat.factory import bundled_gguf_path
    from labs_api.engines.chat.llama_cpp_model import ContextShape, LlamaCppModel

    loaded = LlamaCppModel(bundled_gguf_path(), ContextShape(
        slots=2, context_per_slot=256, batch_tokens=64, threads=2))
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def server_log(tmp_path_factory) -> object:
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="session")
def base_url(server_log) -> Iterator[str]:
    """Base URL (no /v1) of a real server with the default settings."""
    with running_server(log_path=server_log) as url:
        yield url


@pytest.fixture(scope="session")
def openai_client(base_url):
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0)


@pytest.fixture(scope="session")
def chat_model_id(base_url) -> str:
    import httpx

    models = httpx.get(f"{base_url}/v1/models").json()["data"]
    return models[0]["id"]
