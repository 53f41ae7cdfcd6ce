"""HTTP routers: each parses a request, calls a serving object, and returns its result."""
