"""Chunks handed straight from the engine's thread to an outlet (an engine worker's socket):
plain chunks go out one call per step, each generation's last chunk still reaches the
consumer's stream, and when the outlet cannot take a step the group falls back to the loop for
good, with nothing reordered."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from labs_api.engines.chat.admission import (
    AdmissionQueue,
    QueuePolicy,
    StepDeliveries,
    deliver_final,
)
from labs_api.engines.chat.base import GenerationChunk, SamplingParams, TokenLogprob
from labs_api.engines.chat.outlet import ChunkOutlet, from_text_event, wire_event

PARAMS = SamplingParams(max_tokens=8, temperature=0.0, top_p=1.0)


class RecordingOutlet:
    """Refuses the calls whose numbers are in ``refuse``, takes and records the others."""

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.refuse = refuse or set()
        self.calls = 0
        self.sent: list[list[tuple[Any, Any]]] = []

    def send_from_thread(self, items: list[tuple[Any, Any]]) -> bool:
        call, self.calls = self.calls, self.calls + 1
        if call in self.refuse:
            return False
        self.sent.append(list(items))
        return True


def run(outlet: RecordingOutlet, steps: int) -> list[tuple[int, str, str | None]]:
    """Two generations of one group, ``steps`` plain chunks each, then their finals."""

    async def scenario() -> list[tuple[int, str, str | None]]:
        queue = AdmissionQueue(QueuePolicy(max_waiting=4, timeout_s=10.0), capacity=2)
        stream = queue.submit_group([([1], PARAMS, None), ([2], PARAMS, None)], lambda: 2,
                                    ChunkOutlet(outlet, key=7))
        with queue.wakeup:
            members = queue.take(2)

        def engine_thread() -> None:
            for step in range(steps):
                with StepDeliveries.gathered():
                    for member in members:
                        member.deliver(GenerationChunk(text=f"{member.index}:{step}"))
            with StepDeliveries.gathered():
                for member in members:
                    deliver_final(member, f"{member.index}:end", "stop", steps + 1)

        await asyncio.to_thread(engine_thread)
        return [(index, chunk.text, chunk.finish_reason) async for index, chunk in stream]

    return asyncio.run(scenario())


def test_plain_chunks_go_to_the_outlet_one_call_per_step_and_finals_to_the_stream():
    outlet = RecordingOutlet()
    events = run(outlet, steps=3)
    assert [[(key, index, chunk.text) for key, (index, chunk) in call] for call in outlet.sent] \
        == [[(7, 0, f"0:{s}"), (7, 1, f"1:{s}")] for s in range(3)]
    assert events == [(0, "0:end", "stop"), (1, "1:end", "stop")]


def test_a_refused_step_sends_the_group_by_the_loop_from_then_on_in_order():
    outlet = RecordingOutlet(refuse={1})
    events = run(outlet, steps=4)
    # Step 0 went out directly; step 1 was refused, so steps 1-3 and the finals come by the
    # stream (the outlet is not asked again: a later step must not overtake step 1).
    assert [[chunk.text for _, (_, chunk) in call] for call in outlet.sent] == [["0:0", "1:0"]]
    assert outlet.calls == 2
    for index in (0, 1):
        assert [(text, reason) for i, text, reason in events if i == index] == \
            [(f"{index}:1", None), (f"{index}:2", None), (f"{index}:3", None),
             (f"{index}:end", "stop")]


def test_without_an_outlet_every_chunk_comes_by_the_stream():
    async def scenario() -> list[str]:
        queue = AdmissionQueue(QueuePolicy(max_waiting=4, timeout_s=10.0), capacity=1)
        stream = queue.submit_group([([1], PARAMS, None)], lambda: 1)
        with queue.wakeup:
            (member,) = queue.take(1)

        def engine_thread() -> None:
            with StepDeliveries.gathered():
                member.deliver(GenerationChunk(text="a"))
            deliver_final(member, "b", "length", 2)

        await asyncio.to_thread(engine_thread)
        return [chunk.text async for _, chunk in stream]

    assert asyncio.run(scenario()) == ["a", "b"]


def test_a_chunk_of_text_alone_crosses_the_socket_as_plain_values():
    item = (3, GenerationChunk(text=" sea"))
    what, payload = wire_event(item)
    assert (what, payload) == ("text", (3, " sea"))
    assert from_text_event(pickle.loads(pickle.dumps(payload))) == item


@pytest.mark.parametrize("chunk", [
    GenerationChunk(text="end", finish_reason="stop", prompt_tokens=5, completion_tokens=2),
    GenerationChunk(text=" a", logprobs=[TokenLogprob(" a", -0.5, b" a", ())]),
    GenerationChunk(text="", cached_tokens=4),
])
def test_any_other_chunk_goes_whole(chunk):
    assert wire_event((1, chunk)) == ("item", (1, chunk))
