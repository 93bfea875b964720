"""Benchmarks: throughput and latency, crash recovery, and many waiting checkouts."""
