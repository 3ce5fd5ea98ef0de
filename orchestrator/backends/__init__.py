"""Backends: the CPU reference backend (onnxruntime + numpy) and the CUDA backend (TensorRT + NVRTC)."""
