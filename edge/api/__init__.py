"""Small JSON endpoints beside the proxy: catalogue, key status, health, metrics."""
