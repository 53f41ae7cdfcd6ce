"""POST /v1/rerank and /v2/rerank (Cohere's and Jina's shape), POST /rerank (TEI's)."""
