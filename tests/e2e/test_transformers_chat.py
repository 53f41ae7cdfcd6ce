"""The transformers chat engine on a tiny random-weight Llama that the test builds and saves.

The tokenizer (with its chat template) is converted from the bundled SmolLM2 GGUF, so the
model directory has the real formats a HuggingFace checkpoint has, and nothing is downloaded.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from labs_api.engines.chat.base import ChatMessage, SamplingParams
from labs_api.engines.chat.factory import bundled_gguf_path
from labs_api.engines.errors import PromptTooLong
from labs_api.engines.optional import MissingBackendError
from tests.e2e.server import running_server

CONTEXT = 256


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = bundled_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert tokenizer.chat_template, "the GGUF's chat template must come along"
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    from labs_api.engines.chat.transformers_engine import TransformersChatEngine

    return TransformersChatEngine("tiny", str(tiny_llama_dir), torch_dtype="fp32")


MESSAGES = [ChatMessage("user", "Hello there!")]


def generate(engine, **params):
    params.setdefault("top_p", 1.0)
    return asyncio.run(engine.generate(MESSAGES, SamplingParams(**params)))


def test_greedy_tokens_equal_transformers_generate(engine):
    import torch

    ours = generate(engine, max_tokens=12, temperature=0.0)
    prompt = engine.tokenize_prompt(MESSAGES)
    with torch.inference_mode():
        reference = engine.model.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
            eos_token_id=sorted(engine.end_token_ids), pad_token_id=engine.tokenizer.eos_token_id)
    new_tokens = reference[0, len(prompt):].tolist()
    new_tokens = [t for t in new_tokens if t not in engine.end_token_ids]
    assert ours.text == engine.tokenizer.decode(new_tokens, skip_special_tokens=True)
    assert ours.completion_tokens == len(new_tokens)
    assert ours.prompt_tokens == len(prompt)


def test_the_chat_template_of_the_model_is_applied(engine):
    text = engine.tokenizer.decode(engine.tokenize_prompt(MESSAGES))
    assert text.startswith("<|im_start|>system")
    assert text.endswith("<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n")


def test_concurrent_requests_share_one_padded_batch_and_keep_their_greedy_output(engine):
    prompts = ["Hello there!", "What is your name, my friend?", "Hi", "Tell me about cats."]
    params = SamplingParams(max_tokens=10, temperature=0.0, top_p=1.0)

    async def scenario():
        alone = [await engine.generate([ChatMessage("user", p)], params) for p in prompts]
        engine.batcher.largest_batch = 0
        # A running request makes the four wait, so they certainly start as one batch.
        running = engine.stream(MESSAGES, SamplingParams(max_tokens=40, temperature=0, top_p=1))
        await anext(running)
        together = asyncio.gather(
            *(engine.generate([ChatMessage("user", p)], params) for p in prompts))
        [chunk async for chunk in running]
        return alone, await together

    alone, together = asyncio.run(scenario())
    assert engine.batcher.largest_batch == len(prompts)
    for solo, batched in zip(alone, together, strict=True):
        assert batched.text == solo.text
        assert batched.completion_tokens == solo.completion_tokens


def test_max_tokens_gives_length(engine):
    result = generate(engine, max_tokens=5, temperature=0.0)
    assert result.finish_reason == "length" and result.completion_tokens == 5


def test_seed_makes_sampling_repeatable_and_differs_without_it(engine):
    first = generate(engine, max_tokens=16, temperature=1.0, seed=7)
    again = generate(engine, max_tokens=16, temperature=1.0, seed=7)
    other = generate(engine, max_tokens=16, temperature=1.0, seed=8)
    assert first.text == again.text
    assert first.text != other.text


def test_prompt_beyond_context_is_rejected(engine):
    long = [ChatMessage("user", "hello " * CONTEXT)]
    with pytest.raises(PromptTooLong):
        engine.stream(long, SamplingParams(max_tokens=4, temperature=0, top_p=1))


def test_load_in_4bit_without_cuda_is_a_clear_error(tiny_llama_dir):
    from labs_api.engines.chat.transformers_engine import TransformersChatEngine

    with pytest.raises(MissingBackendError, match="CUDA"):
        TransformersChatEngine("tiny", str(tiny_llama_dir), load_in_4bit=True)


def test_served_by_path_through_labs_model(tiny_llama_dir):
    env = {"LABS_MODEL": str(tiny_llama_dir), "LABS_TORCH_DTYPE": "bf16"}
    with running_server(env) as base_url:
        models = [m["id"] for m in httpx.get(f"{base_url}/v1/models").json()["data"]]
        assert str(tiny_llama_dir) in models
        response = httpx.post(f"{base_url}/v1/chat/completions", timeout=60, json={
            "model": str(tiny_llama_dir), "max_tokens": 6, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["completion_tokens"] == 6
        assert body["choices"][0]["finish_reason"] == "length"
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", timeout=60, json={
                "model": str(tiny_llama_dir), "max_tokens": 6, "temperature": 0,
                "stream": True, "messages": [{"role": "user", "content": "Hi"}]}) as stream:
            events = [line for line in stream.iter_lines() if line]
        assert events[-1] == "data: [DONE]" and len(events) >= 4
