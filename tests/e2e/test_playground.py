"""The playground in headless Chromium against the real server on the bundled models, with
every request outside the server refused: chat streams and stops, speech decodes, a heatmap
renders, the server panel shows the models, a key unlocks a guarded server, and axe-core finds
no serious accessibility violation. Each test leaves a screenshot in tests/artifacts/;
LABS_DOCS_SCREENSHOT=1 also writes docs/playground.png from the chat test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path

import httpx
import pytest

from tests.e2e.browser import browsing, playwright_missing
from tests.e2e.server import running_server

REPO = Path(__file__).resolve().parents[2]
UI_DIR = REPO / "ui"
AXE_SCRIPT = UI_DIR / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(playwright_missing() is not None,
                                 reason=playwright_missing() or "")]


def slots_active(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(float(m) for m in re.findall(r"^labs_chat_slots_active\{[^}]*\} (\S+)$", text,
                                             re.MULTILINE))


def open_tab(session, base_url: str, tab: str) -> None:
    session.page.goto(f"{base_url}/#{tab}")
    session.page.wait_for_selector(f"#panel-{tab}:not([hidden])")


def test_chat_streams_an_answer_with_usage_and_stop_cancels_the_next(base_url):
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "chat")
        page.wait_for_selector("#chat-model option", state="attached")
        page.fill("#chat-input", "Say hello in one short sentence.")
        page.click("button[type=submit]:has-text('Send')")
        usage = page.wait_for_selector(".msg.assistant .usage")
        assert re.search(r"\d+ prompt \+ \d+ completion tokens", usage.inner_text())
        first = page.inner_text(".msg.assistant .markdown")
        assert first.strip(), "no streamed text"

        # A long answer, stopped as soon as text appears: the fetch is aborted, the server
        # frees its slot, and the text stops growing.
        page.fill("#chat-max-tokens", "1500")
        page.fill("#chat-input", "Write a very long story about a dragon who learns to cook, "
                                 "with many chapters.")
        page.click("button[type=submit]:has-text('Send')")
        try:
            page.wait_for_function(
                "() => { const m = document.querySelectorAll('.msg.assistant .markdown');"
                " return m.length === 2 && m[1].textContent.trim().length > 0; }")
        finally:
            session.screenshot("chat-streaming")
        session.screenshot("chat-streaming")
        page.click("button.stop")
        page.wait_for_selector(".msg.assistant >> text=Stopped.")
        stopped_text = page.inner_text(".msg.assistant:nth-of-type(4) .markdown")
        deadline = time.monotonic() + 10
        while slots_active(base_url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert slots_active(base_url) == 0, "the server kept generating after Stop"
        time.sleep(0.5)
        assert page.inner_text(".msg.assistant:nth-of-type(4) .markdown") == stopped_text
        assert page.is_visible("button[type=submit]:has-text('Send')")

        # The conversation is kept in the browser: it survives a reload.
        page.reload()
        page.wait_for_selector(".msg.user >> text=Say hello in one short sentence.")
        shot = session.screenshot("chat")
        if os.environ.get("LABS_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(shot, REPO / "docs" / "playground.png")
        session.assert_clean()


LONG_TEXT = " ".join(f"This is sentence number {n} of the streaming test." for n in range(1, 13))


def speech_timeline(page) -> dict:
    """The page's record of the last clip: mode, firstAudio, end (performance.now() marks)."""
    return page.wait_for_function("() => window.__labsSpeechTimeline").json_value()


def test_speech_plays_while_it_streams_and_the_clip_decodes(base_url):
    voices = httpx.get(f"{base_url}/v1/audio/voices").json()["data"]
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "speech")
        # the voice list is the server's (with language and rate), not a fixed list
        option = page.wait_for_selector(f"#tts-voice option[value='{voices[0]['id']}']",
                                        state="attached")
        assert voices[0]["language"] in option.inner_text()
        assert f"{voices[0]['sample_rate']} Hz" in option.inner_text()
        page.fill("#tts-text", LONG_TEXT)
        page.click("button:has-text('Speak')")
        timeline = speech_timeline(page)
        # MP3 goes through Media Source Extensions: the first audio was in the element
        # before the last byte arrived (twelve sentences are synthesised one by one).
        assert timeline["mode"] == "mse", timeline
        assert timeline["firstAudio"] < timeline["end"], timeline
        duration = page.wait_for_function(
            "() => { const a = document.querySelector('audio');"
            " return a && a.readyState >= 1 && Number.isFinite(a.duration) && a.duration > 0"
            " ? a.duration : null; }").json_value()
        assert 5 < duration < 60, duration
        page.wait_for_function("() => document.querySelector('audio').currentTime > 0")
        assert page.is_visible("button:has-text('Download')")
        session.screenshot("speech")
        session.assert_clean()


def test_raw_pcm_plays_as_it_streams_and_replays_as_wav(base_url):
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "speech")
        page.select_option("#tts-format", "pcm")
        page.fill("#tts-text", "Raw samples, played on the Web Audio clock. Then replayed.")
        page.click("button:has-text('Speak')")
        timeline = speech_timeline(page)
        assert timeline["mode"] == "pcm", timeline
        assert timeline["scheduledSeconds"] > 1, timeline
        duration = page.wait_for_function(
            "() => { const a = document.querySelector('audio');"
            " return a && Number.isFinite(a.duration) && a.duration > 0 ? a.duration : null; }"
        ).json_value()
        # the replay element holds exactly what was scheduled (24 kHz, 16-bit)
        assert abs(duration - timeline["scheduledSeconds"]) < 0.05, (duration, timeline)
        with page.expect_download() as info:
            page.click("button:has-text('Download')")
        raw = Path(info.value.path()).read_bytes()
        assert abs(len(raw) / 48000 - timeline["scheduledSeconds"]) < 0.01
        session.assert_clean()


def test_speech_stop_ends_the_request(base_url):
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "speech")
        page.fill("#tts-text", LONG_TEXT * 4)
        page.click("button:has-text('Speak')")
        page.click("#panel-speech button:has-text('Stop')")
        alert = page.wait_for_selector("#panel-speech [role=alert]")
        assert "Stopped" in alert.inner_text()
        assert page.is_visible("button:has-text('Speak')")
        session.assert_clean()


def test_transcription_of_an_uploaded_file_shows_timed_segments(base_url, tmp_path):
    speech = httpx.post(f"{base_url}/v1/audio/speech", timeout=120, json={
        "model": "tts-1", "voice": "alloy", "input": "The quick brown fox jumps over the dog.",
        "response_format": "mp3"})
    assert speech.status_code == 200
    clip = tmp_path / "fox.mp3"
    clip.write_bytes(speech.content)
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "transcription")
        page.set_input_files("#stt-file", str(clip))
        page.wait_for_selector(".segments tbody tr")
        assert "fox" in page.inner_text(".transcript").lower()
        assert re.match(r"0:\d\d\.\d\d", page.inner_text(".segments tbody td"))
        with page.expect_download() as info:
            page.click("button:has-text('Download SRT')")
        srt = Path(info.value.path()).read_text()
        assert re.search(r"^1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n", srt), srt
        session.screenshot("transcription")
        session.assert_clean()


def test_transcription_of_a_microphone_recording(base_url, tmp_path):
    """Chromium's fake microphone plays a WAV of our own speech; the page records it with
    MediaRecorder and transcribes the recording."""
    pcm = httpx.post(f"{base_url}/v1/audio/speech", timeout=120, json={
        "model": "tts-1", "voice": "alloy", "response_format": "pcm",
        "input": "The quick brown fox jumps over the lazy dog."})
    assert pcm.status_code == 200
    clip = tmp_path / "microphone.wav"
    with wave.open(str(clip), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24000)
        out.writeframes(b"\0" * 24000 + pcm.content + b"\0" * 24000)  # a second of quiet around
    with browsing(base_url, microphone=clip) as session:
        page = session.page
        open_tab(session, base_url, "transcription")
        page.click("button:has-text('Record')")
        page.wait_for_selector("button:has-text('Stop recording')")
        page.wait_for_timeout(5000)  # longer than the clip: one whole pass is recorded
        page.click("button:has-text('Stop recording')")
        page.wait_for_selector(".segments tbody tr", timeout=120_000)
        text = page.inner_text(".transcript").lower()
        assert "fox" in text or "dog" in text, text
        session.screenshot("transcription-microphone")
        session.assert_clean()


def test_embeddings_render_a_four_by_four_heatmap(base_url):
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "embeddings")
        page.click("button:has-text('Compare')")
        page.wait_for_selector(".heatmap .cell")
        cells = page.query_selector_all(".heatmap .cell")
        assert len(cells) == 16
        assert [cells[i * 5].inner_text() for i in range(4)] == ["1.00"] * 4
        colours = {c.evaluate("e => getComputedStyle(e).backgroundColor") for c in cells}
        assert len(colours) > 2, colours  # coloured by value, not one colour
        cells[1].hover()
        assert re.search(r"“Hello world” × “Hi there”: 0\.\d{4}", page.inner_text(".readout"))
        session.screenshot("embeddings")
        session.assert_clean()


def first_load_ms(session, tries: int = 3) -> float:
    """The page's load event, uncached (the browser cache off), best of ``tries``: one load
    can be slowed by whatever else the 2-core machine is doing at that moment."""
    page = session.page
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    times = []
    for _ in range(tries):
        page.reload(wait_until="load")  # a full navigation (a goto to the same #hash is not)
        times.append(page.evaluate(
            "() => performance.getEntriesByType('navigation')[0].loadEventEnd"))
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})
    print(f"\nfirst loads (ms, uncached): {[round(t) for t in times]}")
    return min(times)


def test_server_panel_shows_each_model_state_and_worker(base_url, chat_model_id):
    models = httpx.get(f"{base_url}/v1/status").json()["data"]
    with browsing(base_url) as session:
        page = session.page
        open_tab(session, base_url, "server")
        for model in models:
            row = page.wait_for_selector(f"tr[data-model='{model['id']}']")
            assert row.query_selector(".state").inner_text().startswith(model["state"])
            assert str(model["pid"]) in row.inner_text()
            # the worker's resident memory, as /v1/status measures it
            assert re.fullmatch(r"\d+ MB", row.query_selector(".memory").inner_text())
            assert model["memory_bytes"] > 10 * 2**20
        page.wait_for_selector(".figures >> text=Completion tokens")
        assert 0 < first_load_ms(session) < 1000
        # While answers are being generated, the panel's tokens/s (from two /metrics
        # readings) becomes positive.
        stop = threading.Event()

        def generate() -> None:
            while not stop.is_set():
                httpx.post(f"{base_url}/v1/chat/completions", timeout=120, json={
                    "model": chat_model_id, "max_tokens": 64,
                    "messages": [{"role": "user", "content": "Count to fifty."}]})

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            rate = page.wait_for_function(
                "() => { const d = [...document.querySelectorAll('.figures div')].find("
                "e => e.querySelector('dt').textContent === 'Completion tokens/s');"
                " const v = d && parseFloat(d.querySelector('dd').textContent);"
                " return v > 0 ? v : null; }", timeout=60_000).json_value()
        finally:
            stop.set()
            worker.join(timeout=120)
        assert 0 < rate < 10_000, rate
        # Unload and load a model from the panel: its worker ends, then a new one starts.
        speech = next(m for m in models if m["kind"] == "speech")
        row = f"tr[data-model='{speech['id']}']"
        page.click(f"{row} button:has-text('Unload')")
        page.wait_for_selector(f"{row} .state >> text=unloaded")
        assert httpx.get(f"{base_url}/v1/status").json()["data"][
            [m["id"] for m in models].index(speech["id"])]["pid"] is None
        page.click(f"{row} button:has-text('Load')")
        page.wait_for_selector(f"{row} .state >> text=/^loaded/", timeout=120_000)
        assert str(speech["pid"]) not in page.inner_text(row)
        session.screenshot("server")
        session.assert_clean()


@pytest.fixture(scope="module")
def axe_script() -> str:
    """axe-core's axe.min.js from ui/node_modules (installed with npm ci if missing)."""
    if not AXE_SCRIPT.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: axe-core comes from ui/'s npm packages")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=UI_DIR, check=True,
                       capture_output=True, timeout=600)
    return AXE_SCRIPT.read_text(encoding="utf-8")


@pytest.mark.parametrize("tab", ["chat", "speech", "transcription", "embeddings", "server"])
def test_no_serious_accessibility_violations(base_url, axe_script, tab):
    with browsing(base_url, bypass_csp=True) as session:
        page = session.page
        open_tab(session, base_url, tab)
        if tab == "embeddings":
            page.click("button:has-text('Compare')")
            page.wait_for_selector(".heatmap .cell")
        if tab == "server":
            page.wait_for_selector("table.models tbody tr")
        page.add_script_tag(content=axe_script)
        results = page.evaluate("async () => (await axe.run(document)).violations"
                                ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))")
        bad = [v for v in results if v["impact"] in ("serious", "critical")]
        assert bad == [], bad
        session.assert_clean()


def test_with_a_key_the_page_shows_401_then_works_with_the_key():
    env = {"LABS_PRELOAD_ON_START": "false", "LABS_API_KEY": "s3cret"}
    with running_server(env, wait_ready=False) as url:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with browsing(url) as session:
            page = session.page
            open_tab(session, url, "embeddings")
            page.click("button:has-text('Compare')")
            alert = page.wait_for_selector("#panel-embeddings [role=alert]")
            assert "401" in alert.inner_text() and "API key" in alert.inner_text()
            session.screenshot("key-401")
            page.fill("#api-key", "s3cret")
            page.click("button:has-text('Save key')")
            page.click("button:has-text('Compare')")
            page.wait_for_selector(".heatmap .cell", timeout=120_000)
            assert page.query_selector("#panel-embeddings [role=alert]") is None
            page.reload()  # the key is kept in the browser
            assert page.input_value("#api-key") == "s3cret"
            session.screenshot("key-ok")
            # the 401s were the page's own requests: nothing else went wrong
            session.errors = [e for e in session.errors if "401" not in e]
            session.assert_clean()
