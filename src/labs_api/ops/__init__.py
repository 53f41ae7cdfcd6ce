"""Operations and security around the API: keys, rate limits, CORS, body size, request ids,
access logs and Prometheus metrics. ``labs_api.ops.install.install_operations`` wires them."""
