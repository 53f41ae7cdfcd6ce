"""Speech-to-text engines: 16 kHz samples in, timed text segments out (no HTTP)."""
