"""Text-to-speech engines: text in, float samples out (no HTTP, no file formats)."""
