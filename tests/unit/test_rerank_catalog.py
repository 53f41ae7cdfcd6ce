"""LABS_RERANK_MODEL: the rerank slot in the catalog, its engine's proxy, and the settings."""

from __future__ import annotations

import pytest

from labs_api.catalog import build_registry
from labs_api.engines.remote import PROXIES, EngineHost, RemoteRerankEngine
from labs_api.settings import Settings
from tests.unit.test_rerank_http import FakeRerankEngine


def test_no_rerank_slot_unless_configured():
    assert build_registry(Settings()).ids("rerank") == []


def test_the_configured_cross_encoder_is_a_rerank_slot_of_its_own(tmp_path):
    registry = build_registry(Settings(rerank_model=str(tmp_path)))
    (slot,) = [s for s in registry.slots if s.kind == "rerank"]
    assert slot.model_id == str(tmp_path) and "CrossEncoder" in slot.description
    assert PROXIES["rerank"] is RemoteRerankEngine


def test_an_empty_rerank_model_is_refused_at_start_up():
    with pytest.raises(ValueError, match="rerank_model"):
        Settings(rerank_model="")


def test_the_proxy_reaches_the_engine_through_a_host():
    import asyncio

    host = EngineHost("rerank", FakeRerankEngine())

    class Direct:
        async def call(self, method, *args):
            return await getattr(host, method)(*args)

    proxy = RemoteRerankEngine(Direct(), {"model_id": "fake-rerank"})
    result = asyncio.run(proxy.rerank("dogs", ["dogs run", "cats sit"], True))
    assert result.scores == [1.0, 0.0] and proxy.model_id == "fake-rerank"
