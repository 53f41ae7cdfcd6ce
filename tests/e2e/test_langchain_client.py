"""LangChain's `ChatOpenAI` and `OpenAIEmbeddings` pointed at the real server: plain, streaming,
JSON mode and structured output, tools, embeddings and errors.

`OpenAIEmbeddings` needs `check_embedding_ctx_length=False`: otherwise it tokenizes with tiktoken
(whose files come from the internet) and sends token ids, which this server rejects with a 422
that says so.
"""

from __future__ import annotations

import asyncio
import json
import math

import openai
import pytest
from pydantic import BaseModel, Field

langchain_openai = pytest.importorskip("langchain_openai")

pytestmark = pytest.mark.slow

EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2


class Greeting(BaseModel):
    # Bounded, so that the tiny model's greedy ramble ends inside max_tokens on any CPU
    # (greedy text differs between llama.cpp builds; the grammar enforces the bound).
    greeting: str = Field(max_length=40)


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"Sunny in {city}"


@pytest.fixture(scope="module")
def v1(base_url) -> str:
    return f"{base_url}/v1"


@pytest.fixture(scope="module")
def chat(v1, chat_model_id):
    return langchain_openai.ChatOpenAI(model=chat_model_id, base_url=v1, api_key="not-needed",
                                       max_tokens=60, temperature=0, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def embeddings(v1, base_url):
    import httpx

    models = httpx.get(f"{base_url}/v1/models").json()["data"]
    model = next(m["id"] for m in models if "MiniLM" in m["id"])
    return langchain_openai.OpenAIEmbeddings(
        model=model, base_url=v1, api_key="not-needed", check_embedding_ctx_length=False,
        tiktoken_enabled=False, max_retries=0, timeout=120)


def test_invoke(chat, chat_model_id):
    message = chat.invoke("Say hello.")
    assert isinstance(message.content, str) and message.content
    assert message.response_metadata["model_name"] == chat_model_id
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    usage = message.usage_metadata
    assert 0 < usage["output_tokens"] <= 60
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_stream_with_usage(chat):
    chunks = list(chat.bind(stream_options={"include_usage": True}).stream("Count to five."))
    pieces = [c.content for c in chunks if c.content]
    assert len(pieces) > 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == "".join(pieces)
    assert total.response_metadata.get("finish_reason") in ("stop", "length")
    assert 0 < total.usage_metadata["output_tokens"] <= 60


def test_async_invoke_and_stream(chat):
    async def run():
        message = await chat.ainvoke("Say hello.")
        pieces = [c.content async for c in chat.astream("Say hello.") if c.content]
        return message, pieces

    message, pieces = asyncio.run(run())
    assert message.content and len(pieces) > 1


def test_json_mode_through_bind(chat):
    message = chat.bind(response_format={"type": "json_object"}, max_tokens=100).invoke(
        'Return a JSON object with a key "greeting".')
    assert isinstance(json.loads(message.content), dict)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_to_a_pydantic_model(chat, method):
    # json_schema: response_format json_schema (strict); function_calling: a named tool_choice.
    result = chat.with_structured_output(Greeting, method=method).invoke("Greet me.")
    assert isinstance(result, Greeting) and isinstance(result.greeting, str)


def test_structured_output_json_mode(chat):
    result = chat.bind(max_tokens=100).with_structured_output(method="json_mode").invoke(
        'Return a JSON object with a key "greeting".')
    assert isinstance(result, dict)


@pytest.mark.parametrize("tool_choice", ["required", "get_weather"])
def test_bind_tools_gives_tool_calls(chat, tool_choice):
    message = chat.bind_tools([get_weather], tool_choice=tool_choice).invoke(
        "What is the weather in Paris?")
    assert message.response_metadata["finish_reason"] == "tool_calls"
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert call["id"].startswith("call_")


def test_streamed_tool_call_is_assembled(chat):
    chunks = list(chat.bind_tools([get_weather], tool_choice="required").stream(
        "What is the weather in Paris?"))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    [call] = total.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)


def test_tool_result_round_trip(chat):
    """The assistant's call and the tool's answer go back to the server as history."""
    from langchain_core.messages import HumanMessage, ToolMessage

    question = HumanMessage("What is the weather in Paris?")
    call = chat.bind_tools([get_weather], tool_choice="required").invoke([question])
    [tool_call] = call.tool_calls
    answer = ToolMessage(get_weather(**tool_call["args"]),
                         tool_call_id=tool_call["id"])
    final = chat.bind_tools([get_weather]).invoke([question, call, answer])
    assert final.content or final.tool_calls


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_embed_documents_and_query(embeddings):
    documents = embeddings.embed_documents(["The cat sat on the mat.", "A dog barked.", "Hi"])
    query = embeddings.embed_query("Where did the cat sit?")
    assert [len(v) for v in documents] == [EMBEDDING_DIMENSIONS] * 3
    assert len(query) == EMBEDDING_DIMENSIONS
    for vector in [*documents, query]:
        assert math.isclose(norm(vector), 1.0, abs_tol=1e-3)
    similarity = [sum(a * b for a, b in zip(query, d, strict=True)) for d in documents]
    assert similarity[0] == max(similarity)  # the cat sentence is the closest


def test_async_embeddings(embeddings):
    vectors = asyncio.run(embeddings.aembed_documents(["one", "two"]))
    assert [len(v) for v in vectors] == [EMBEDDING_DIMENSIONS] * 2


def test_unknown_chat_model_raises_not_found(v1):
    chat = langchain_openai.ChatOpenAI(model="no-such-model", base_url=v1, api_key="not-needed",
                                       max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        chat.invoke("Hello")
    assert caught.value.status_code == 404
    assert "no-such-model" in str(caught.value)


def test_unknown_embedding_model_raises_not_found(v1):
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="no-such-model", base_url=v1, api_key="not-needed",
        check_embedding_ctx_length=False, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        embeddings.embed_query("Hello")


def test_invalid_value_raises_unprocessable(chat):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        chat.bind(top_logprobs=3).invoke("Hello")  # top_logprobs without logprobs
    assert caught.value.status_code == 422
