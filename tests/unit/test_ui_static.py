"""The playground at /: its page and files, content types and caching, LABS_UI=false, the
routes it must not shadow, the bundle budget and the committed build being up to date."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labs_api.app import create_app
from labs_api.settings import Settings
from labs_api.ui.build_info import built_files, read_build_info, sources_digest
from labs_api.ui.routes import static_directory
from tests.fakes import FakeChatEngine, registry_with

REPO = Path(__file__).resolve().parents[2]
UI_SOURCES = REPO / "ui"
BUDGET_GZIP_BYTES = 300 * 1024


def make_client(**settings) -> TestClient:
    return TestClient(create_app(Settings(**settings), registry_with(FakeChatEngine("m"))))


def page_assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_page_is_served_at_the_root_and_never_cached_stale():
    response = make_client().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    assert '<div id="app">' in response.text


def test_the_page_loads_only_local_files_with_their_content_types():
    client = make_client()
    html = client.get("/").text
    assert "http://" not in html and "https://" not in html
    assets = page_assets(html)
    kinds = {Path(a).suffix for a in assets}
    assert {".js", ".css"} <= kinds, assets
    expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for url in assets:
        assert url.startswith("/ui/assets/"), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"] == expected[Path(url).suffix], url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_the_bundle_references_no_other_host():
    for path in (static_directory() / "assets").iterdir():
        text = path.read_text(encoding="utf-8")
        # Libraries mention URLs in comments and messages; none is loaded: no import or
        # url() from another host, and no fetch to one.
        assert not re.search(r"""(?:import\s*\(?|url\()\s*["']?https?://""", text), path.name
        assert "fonts.googleapis" not in text and "cdn." not in text.lower(), path.name


def test_unknown_ui_files_are_404():
    assert make_client().get("/ui/assets/missing.js").status_code == 404


def test_labs_ui_false_turns_the_playground_off(monkeypatch):
    monkeypatch.setenv("LABS_UI", "false")
    settings = Settings()
    assert settings.ui is False
    client = TestClient(create_app(settings, registry_with(FakeChatEngine("m"))))
    assert client.get("/").status_code == 404
    assert client.get("/ui/index.html").status_code == 404
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/v1/models", "/docs", "/health", "/ready", "/metrics",
                                  "/openapi.json", "/redoc"])
def test_the_playground_shadows_no_other_route(path):
    response = make_client().get(path)
    assert response.status_code in (200, 503), path
    assert '<div id="app">' not in response.text, path


def test_with_api_keys_the_playground_stays_open_and_the_api_does_not():
    client = make_client(api_key="secret")
    html = client.get("/")
    assert html.status_code == 200
    for url in page_assets(html.text):
        assert client.get(url).status_code == 200, url
    assert client.get("/v1/models").status_code == 401
    authorised = client.get("/v1/models", headers={"Authorization": "Bearer secret"})
    assert authorised.status_code == 200


def test_the_whole_bundle_is_under_its_gzip_budget():
    total = sum(len(gzip.compress(p.read_bytes(), compresslevel=9))
                for p in static_directory().rglob("*") if p.is_file())
    assert 10 * 1024 < total < BUDGET_GZIP_BYTES, total


@pytest.mark.skipif(not UI_SOURCES.is_dir(), reason="ui/ sources are not in this checkout")
def test_the_committed_build_matches_its_sources():
    info = read_build_info(static_directory())
    assert info["sources_sha256"] == sources_digest(UI_SOURCES), (
        "ui/ changed since the committed build: run 'npm ci && npm run build' in ui/ and commit "
        "src/labs_api/ui/static")


def test_the_committed_build_was_not_edited_after_it_was_made():
    info = read_build_info(static_directory())
    assert built_files(static_directory()) == info["files"]


def test_the_source_digest_changes_with_any_source(tmp_path):
    for name in ("index.html", "package.json", "package-lock.json", "vite.config.js"):
        (tmp_path / name).write_text(name)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.jsx").write_text("a")
    before = sources_digest(tmp_path)
    (tmp_path / "src" / "main.jsx").write_text("b")
    assert sources_digest(tmp_path) != before
    (tmp_path / "src" / "main.jsx").write_text("a")
    assert sources_digest(tmp_path) == before
    (tmp_path / "src" / "extra.js").write_text("")
    assert sources_digest(tmp_path) != before
