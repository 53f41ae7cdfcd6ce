"""Engines in supervised child processes.

Each served model's engine runs in a worker process of its own (``child.py``), as Ollama's
runners and vLLM's engine core do. The server process keeps HTTP, validation, streaming and
metrics, and talks to each worker through a :class:`~labs_api.workers.supervisor.EngineWorker`
over a socket pair (``wire.py``). A worker that dies or stalls costs only its own requests: they
fail with a clear error, the worker is started again, and the next request is served.
"""
