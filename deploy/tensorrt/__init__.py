"""TensorRT engine building (TRT 8.5 to 11)."""
