"""The chat model's per-token shortcuts give what llama.cpp's own calls give: the logits view
made once per row address, and the pieces and end-of-generation answers kept per token id."""

from __future__ import annotations

import numpy as np
import pytest

from labs_api.engines.chat.llama_cpp_model import DecodeError, LlamaCppModel

pytestmark = pytest.mark.slow


def llama_cpp_logits(model: LlamaCppModel, index: int) -> np.ndarray:
    pointer = model.lib.llama_get_logits_ith(model.ctx, index)
    return np.ctypeslib.as_array(pointer, shape=(model.n_vocab,)).copy()


def decode_two_prompts(model: LlamaCppModel) -> tuple[int, int]:
    """Both sequences in one batch, logits for each one's last token; their batch indexes."""
    model.forget(0)
    model.forget(1)
    model.batch_clear()
    last = []
    for sequence, text in enumerate(("The sea is", "Write a poem about a city at night:")):
        tokens = model.tokenize(text, add_bos=True)
        for position, token in enumerate(tokens):
            index = model.batch_add(token, position, sequence, position == len(tokens) - 1)
        last.append(index)
    model.decode()
    return last[0], last[1]


def test_the_view_holds_llama_cpps_logits_for_every_row_after_every_decode(bundled_llama):
    model = bundled_llama
    for _ in range(3):  # later decodes reuse the views made for the first
        first, second = decode_two_prompts(model)
        for index in (first, second):
            assert np.array_equal(model._logits_at(index), llama_cpp_logits(model, index))
        assert not np.array_equal(model._logits_at(first), model._logits_at(second))
        assert model.greedy_token(first) == int(llama_cpp_logits(model, first).argmax())


def test_a_position_without_logits_is_an_error_not_a_crash(bundled_llama):
    model = bundled_llama
    decode_two_prompts(model)
    with pytest.raises(DecodeError):
        model._logits_at(1)  # the first prompt's second token asked for no logits


def test_kept_pieces_and_end_of_generation_match_llama_cpp(bundled_llama):
    model = bundled_llama
    tokens = model.tokenize("Hello, wörld! 🌊", add_bos=False)
    for token in tokens * 2:  # the second pass answers from what was kept
        assert model.text_piece(token) == model.piece(token)
        assert model.is_end_of_generation(token) is False
    eos = model.lib.llama_vocab_eos(model.vocab)
    assert model.is_end_of_generation(eos) and model.is_end_of_generation(eos)
    assert model.text_piece(eos) == model.piece(eos) == b""
