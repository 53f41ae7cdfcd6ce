"""Embedding engines (sentence-transformers) behind one interface, and the dynamic batcher."""
