"""Inference engines. Nothing in here knows about HTTP."""
