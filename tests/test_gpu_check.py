"""tools/gpu_check.sh: one summary line per GPU path; on a machine without CUDA every path is skipped with its reason."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["torch-cuda-profile", "distill-amp-fp16", "distill-amp-bf16", "ddp-nccl", "ort-cuda", "tensorrt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: run tools/gpu_check.sh itself")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_skips_every_path_without_cuda(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={"PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "ONNX Runtime providers:" in lines[0] and "CPUExecutionProvider" in lines[0]
    skipped = [line.split()[1] for line in lines[1:] if line.startswith("SKIP")]
    assert skipped == PATHS and all("no CUDA device" in line for line in lines[1:])
