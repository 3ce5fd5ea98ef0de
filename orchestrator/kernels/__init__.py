"""Custom kernels: their signatures (shape rules, launch rules) and NVRTC compilation."""
