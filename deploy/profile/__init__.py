"""Profiling: latency, memory, power, accuracy and the report."""
