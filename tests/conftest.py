"""Shared fixtures. Real-model tests live in tests/e2e; tests/unit use fake engines."""

from __future__ import annotations

import os

# No test may reach a model hub: everything must come from the packages or the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
