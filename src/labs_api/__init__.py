"""AI Labs API: an OpenAI-compatible server for chat, embeddings, similarities and speech."""

__version__ = "0.1.0"
