"""POST /v1/embeddings and POST /v1/similarities."""
