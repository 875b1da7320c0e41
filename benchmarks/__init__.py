"""Latency / throughput benchmarks: the floor (model alone, in process) and the service (over HTTP) in one run."""
