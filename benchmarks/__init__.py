"""Latency, pipeline and reference benchmarks (thin scripts over `edge`); see `make bench`."""
