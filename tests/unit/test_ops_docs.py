"""/docs and /redoc load their scripts from this server, never from a CDN."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from tests.fakes import FakeChatEngine, registry_with


def make_client(**settings) -> TestClient:
    return TestClient(create_app(Settings(**settings), registry_with(FakeChatEngine("m"))))


def local_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html) + re.findall(
        r"url: ?'([^']+)'", html)


def test_docs_page_references_only_local_assets():
    client = make_client()
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "http://" not in html and "https://" not in html, page
        urls = local_urls(html)
        assert any(u.endswith(".js") for u in urls), page
        for url in urls:
            assert url.startswith("/"), url
            response = client.get(url)
            assert response.status_code == 200, url
            assert len(response.content) > 100, url


def test_swagger_assets_are_swagger_ui():
    client = make_client()
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert b"SwaggerUIBundle" in script.content
    assert client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_docs_stay_open_with_keys_and_offer_the_key():
    client = make_client(api_key="k")
    assert client.get("/docs").status_code == 200
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "securitySchemes" in client.get("/openapi.json").json()["components"]


def test_oauth2_redirect_page_is_served():
    assert make_client().get("/docs/oauth2-redirect").status_code == 200
