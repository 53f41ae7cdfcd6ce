"""The SQLite store of responses: bounds by age and count, owners, a file that persists."""

from __future__ import annotations

from labs_api.api.responses.store import ResponseStore, StoredResponse


def record(rid: str, text: str = "hi") -> StoredResponse:
    return StoredResponse(rid, {"id": rid, "output_text": text},
                          [{"type": "message", "role": "user", "content": text}], [])


def test_ttl_expires_responses():
    store = ResponseStore(":memory:", ttl_s=100, max_count=10)
    store.put("", record("a"), now=1000)
    assert store.get("", "a", now=1099) is not None
    assert store.get("", "a", now=1100) is None  # expired: no longer served
    store.put("", record("b"), now=1200)  # each write also removes what has expired
    assert store.count() == 1


def test_count_bound_drops_the_oldest_first():
    store = ResponseStore(":memory:", ttl_s=10_000, max_count=3)
    for i in range(5):
        store.put("", record(f"r{i}"), now=1000 + i)
    assert store.count() == 3
    assert [store.get("", f"r{i}", now=1010) is not None for i in range(5)] == \
        [False, False, True, True, True]


def test_size_bound_drops_the_oldest_first():
    store = ResponseStore(":memory:", ttl_s=10_000, max_count=100, max_bytes=3000)
    for i in range(5):
        store.put("", record(f"r{i}", "x" * 400), now=1000 + i)  # ~900 characters each
    kept = [store.get("", f"r{i}", now=1010) is not None for i in range(5)]
    assert kept == [False, False, True, True, True]


def test_owners_see_only_their_own():
    store = ResponseStore(":memory:", ttl_s=100, max_count=10)
    store.put("owner-a", record("x"), now=1)
    assert store.get("owner-b", "x", now=2) is None
    assert store.delete("owner-b", "x") is False
    assert store.get("owner-a", "x", now=2).response["id"] == "x"
    assert store.delete("owner-a", "x") is True
    assert store.get("owner-a", "x", now=2) is None


def test_a_file_store_is_read_back_by_a_new_instance(tmp_path):
    first = ResponseStore(str(tmp_path / "data"), ttl_s=1e9, max_count=10)
    first.put("", record("kept", "ünïcode ✓"))
    first.close()
    second = ResponseStore(str(tmp_path / "data"), ttl_s=1e9, max_count=10)
    got = second.get("", "kept")
    assert got is not None and got.response["output_text"] == "ünïcode ✓"
    assert got.input_items[0]["content"] == "ünïcode ✓"
