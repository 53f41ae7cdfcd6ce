"""Reranking: scoring documents against a query with a cross-encoder."""
