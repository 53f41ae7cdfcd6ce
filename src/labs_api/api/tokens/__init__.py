"""POST /tokenize and POST /detokenize (llama-server's and vLLM's shapes)."""
