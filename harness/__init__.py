"""The interop and throughput harness (topologies, peer drivers, scenarios, reports)."""
