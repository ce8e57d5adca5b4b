"""Everything after training: ONNX / INT8 / FP16 / TensorRT export, one runtime interface over
PyTorch, ONNX Runtime and TensorRT, profiling and reports, Jetson telemetry, Docker assets.
Imports ``models`` and the checkpoint/data/io helpers of ``compressor``, never its training engine."""
