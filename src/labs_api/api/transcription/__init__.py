"""POST /v1/audio/transcriptions and POST /v1/audio/translations (OpenAI's)."""
