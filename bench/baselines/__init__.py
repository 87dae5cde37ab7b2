"""Servers the benchmark measures the gateway against."""
