"""Rendering a model's own Jinja chat template (as stored in GGUF metadata) into a prompt."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from labs_api.engines.chat.base import ChatMessage
from labs_api.engines.errors import InvalidRequest

# Used when a GGUF file carries no template: ChatML, the most common format.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    """A compiled chat template with the special tokens it refers to."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: list[ChatMessage], **extra: Any) -> str:
        """The prompt text for ``messages``, ending where the assistant's reply begins."""
        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateError as exc:
            # Templates reject what the model cannot take (e.g. roles out of order).
            raise InvalidRequest(f"The model's chat template rejected the messages: {exc}",
                                  param="messages") from None


#: A piece of a rendered prompt: its text, and whether it is the template's own markup (whose
#: special-token text becomes special tokens) or a message's content (always plain text).
PromptPart = tuple[str, bool]


def render_parts(render: Callable[[list[ChatMessage]], str],
                 messages: list[ChatMessage]) -> list[PromptPart]:
    """Render ``messages`` through ``render`` with each content replaced by a placeholder,
    then cut the text at the placeholders: what a client wrote never passes for markup, so
    ``<|im_end|>`` in a message is text, not the end of its turn."""
    nonce = secrets.token_hex(8)
    marker = re.compile(f"\ue000{nonce}:(\\d+)\ue001")
    stand_ins = [ChatMessage(m.role, f"\ue000{nonce}:{i}\ue001") for i, m in enumerate(messages)]
    text = render(stand_ins)
    parts: list[PromptPart] = []
    position = 0
    for found in marker.finditer(text):
        if found.start() > position:
            parts.append((text[position:found.start()], True))
        content = messages[int(found.group(1))].content
        if content:
            parts.append((content, False))
        position = found.end()
    if position < len(text):
        parts.append((text[position:], True))
    return parts
