"""Server benchmarks on loopback: `python -m benchmarks.serving.load` (throughput, latency, memory under load)
and `python -m benchmarks.serving.faults` (fault cases, each on a fresh server)."""
