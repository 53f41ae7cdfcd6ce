"""Ray mode serves the models file: one deployment per entry (built, not deployed: no
cluster needed), each replica loading its own entry with the entry's options."""

from __future__ import annotations

import pytest

from labs_api.settings import Settings

pytest.importorskip("ray.serve")

FILE = """
[[models]]
id = "a"
kind = "chat"
aliases = ["gpt-4o-mini"]
context_size = 512
[[models]]
id = "b"
kind = "chat"
[[models]]
id = "e2"
kind = "embedding"
"""


def test_one_deployment_per_entry(tmp_path):
    from labs_api.ray_serve.launcher import build_application
    from labs_api.ray_serve.replicas import _slot

    path = tmp_path / "models.toml"
    path.write_text(FILE)
    settings = Settings(models_file=path)
    ingress = build_application(settings)._bound_deployment
    handles = ingress.init_args[1]
    # The file's entries, and the default speech model (the file has none); transcription
    # has no deployment yet.
    assert sorted(handles) == ["a", "b", "e2", "en_US-joe-medium"]
    names = {i: h._bound_deployment.name for i, h in handles.items()}
    assert names == {"a": "Chat", "b": "Chat2", "e2": "Embedding", "en_US-joe-medium": "Speech"}
    assert handles["a"]._bound_deployment.init_args[1] == "a"
    # A replica finds its entry (with its options) from the settings it is bound with.
    slot = _slot(handles["a"]._bound_deployment.init_args[0], "a")
    assert slot.aliases == ("gpt-4o-mini",) and slot.load.args[2].n_ctx == 512


def test_the_ingress_never_unloads_a_deployment(tmp_path):
    import asyncio

    from labs_api.errors import BadRequestError
    from labs_api.ray_serve.proxies import proxy_registry

    path = tmp_path / "models.toml"
    path.write_text(FILE)
    registry = proxy_registry(Settings(models_file=path), {"a": object(), "b": object()})
    assert registry.ids() == ["a", "b"] and not registry.unloading
    with pytest.raises(BadRequestError, match="Ray Serve deployment"):
        asyncio.run(registry.unload("a"))
