"""The demo's outside world: simulated services that only the wiring and the benchmarks choose."""
