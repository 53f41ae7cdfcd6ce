"""POST /v1/tts (the spec's) and POST /v1/audio/speech (OpenAI's)."""
