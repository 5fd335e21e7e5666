"""Benchmarks and metrics: latency, throughput, accuracy, size, memory, and the reports.

Works on model directories, ONNX files and plain texts/labels; never imports `compress`.
"""
