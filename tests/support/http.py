"""Plain HTTP requests to the server under test (the helpers the benchmarks use too)."""

from bench.http import NotJSON, http_get, http_get_json, http_status

__all__ = ["NotJSON", "http_get", "http_get_json", "http_status"]
