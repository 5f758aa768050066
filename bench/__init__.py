"""Benchmarks that span services; run from the repository root (``make bench-e2e``)."""
