"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``): one
translation layer onto the chat completions path (``labs_api.api.chat``)."""
