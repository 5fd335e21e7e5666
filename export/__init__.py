"""ONNX export, INT8 quantization, parity checks and the ORT mobile format.

Works on a model directory (Hugging Face layout) or an ONNX file alone; never imports `compress`.
"""
