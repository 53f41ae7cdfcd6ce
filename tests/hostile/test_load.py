"""A bounded loopback load test: 64 clients (chat, embeddings, speech) for 60 s against the real
server with the production connection settings. No request may be lost: each one completes
correctly, or is refused with 429/503, a reason and Retry-After. Prints the counts and the
server's resident memory at the start and the end."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import time

import httpx
import pytest

from tests.e2e.server import running_server

pytestmark = pytest.mark.slow

CLIENTS = 64
DURATION_S = float(os.environ.get("LABS_LOAD_SECONDS", "60"))
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resident_bytes(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return float(re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", text, re.M)[1])


async def one_request(client: httpx.AsyncClient, kind: str, chat_model: str, n: int) -> str:
    """Send one request of ``kind``; return its outcome ("ok", "429", "503"); raise on anything
    that is neither a correct answer nor an explained refusal."""
    if kind == "chat":
        response = await client.post("/v1/chat/completions", json={
            "model": chat_model, "max_tokens": 12, "stream": n % 2 == 0,
            "messages": [{"role": "user", "content": f"Count to {n % 7 + 2}."}]})
    elif kind == "embeddings":
        response = await client.post("/v1/embeddings", json={
            "model": EMBEDDING_MODEL, "input": [f"sentence {n}", "another one"][: n % 2 + 1]})
    else:
        response = await client.post("/v1/audio/speech", json={
            "model": "tts-1", "voice": "alloy", "input": f"Hello number {n % 10}.",
            "response_format": "wav"})
    if response.status_code in (429, 503):
        error = response.json()["error"]
        assert error["message"] and response.headers["retry-after"], response.text
        return str(response.status_code)
    assert response.status_code == 200, (kind, response.status_code, response.text[:300])
    if kind == "chat" and n % 2 == 0:
        assert response.text.endswith("data: [DONE]\n\n") and '"error"' not in response.text
    elif kind == "chat":
        assert isinstance(response.json()["choices"][0]["message"]["content"], str)
    elif kind == "embeddings":
        assert all(len(d["embedding"]) == 384 for d in response.json()["data"])
    else:
        assert response.content[:4] == b"RIFF" and len(response.content) > 10_000
    return "ok"


async def run_clients(base_url: str, chat_model: str) -> tuple[collections.Counter, list[str]]:
    outcomes: collections.Counter = collections.Counter()
    lost: list[str] = []
    deadline = time.monotonic() + DURATION_S
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async with httpx.AsyncClient(base_url=base_url, timeout=180, limits=limits) as client:
        async def worker(index: int) -> None:
            kind = ("chat", "embeddings", "speech")[index % 3]
            n = 0
            while time.monotonic() < deadline:
                n += 1
                try:
                    outcomes[(kind, await one_request(client, kind, chat_model, n))] += 1
                except Exception as exc:  # lost: a wrong answer, a timeout, a reset
                    lost.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")

        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    return outcomes, lost


def test_64_mixed_clients_for_a_minute_lose_no_request(tmp_path):
    with running_server(log_path=tmp_path / "load.log") as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as probe:
        chat_model = probe.get("/v1/models").json()["data"][0]["id"]
        rss_start = resident_bytes(probe)
        started = time.monotonic()
        outcomes, lost = asyncio.run(run_clients(base_url, chat_model))
        seconds = time.monotonic() - started
        rss_end = resident_bytes(probe)
        assert probe.get("/health").json() == {"status": "ok"}
    total = sum(outcomes.values())
    print(f"\nload: {CLIENTS} clients, {seconds:.0f} s, {total} requests answered, "
          f"{len(lost)} lost; {dict(sorted(outcomes.items()))}; "
          f"RSS {rss_start / 2**20:.0f} MiB at start, {rss_end / 2**20:.0f} MiB at the end")
    assert lost == [], lost[:10]
    for kind in ("chat", "embeddings", "speech"):
        assert outcomes[(kind, "ok")] > 0, outcomes
