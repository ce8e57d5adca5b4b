# Desktop NVIDIA GPUs: TensorRT + CUDA base image, the project installed as the README installs it.
#   docker build -t edge-compressor .
#   docker run --gpus all --ipc=host -v "$PWD/runs:/work/runs" edge-compressor demo --out /work/runs/demo
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/edge-compressor
COPY pyproject.toml README.md ./
COPY tools/constraints.txt tools/constraints.txt
COPY models models
COPY compressor compressor
COPY deploy deploy

# Same command as the README (the pinned torch is a CUDA build on x86-64 Linux); the image's own
# TensorRT Python bindings stay in place. onnxruntime and onnxruntime-gpu write the same module and
# ONNX Runtime's documentation says to have only one, so the CPU package the project depends on is
# swapped for the GPU one (its CUDA and TensorRT providers); the last line fails the build otherwise.
RUN python3 -m pip install -c tools/constraints.txt -e . \
    && python3 -m pip uninstall -y onnxruntime \
    && python3 -m pip install -c tools/constraints.txt --no-deps "onnxruntime-gpu>=1.17" \
    && python3 -m pip install -c tools/constraints.txt "nvidia-ml-py>=12.535" \
    && python3 -c "import importlib.metadata as m, onnxruntime as o; assert not any(d.metadata['Name'] == 'onnxruntime' for d in m.distributions()); assert 'CUDAExecutionProvider' in o.get_available_providers()" \
    && compressor --version

WORKDIR /work
ENTRYPOINT ["compressor"]
CMD ["--help"]
