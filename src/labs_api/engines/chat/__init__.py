"""Chat engines: llama.cpp for GGUF files, transformers for HuggingFace ids and directories."""
