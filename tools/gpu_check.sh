#!/usr/bin/env bash
# Every path the CPU machines cannot run, on one CUDA GPU, in one call (under 8 minutes):
#   1. profiling the PyTorch CUDA backends (fp32, fp16) with the CUDA allocator's peak memory
#   2. a few distillation steps with fp16 and with bf16 AMP
#   3. torchrun DDP with NCCL (2 processes when 2 GPUs are visible, else 1)
#   4. ONNX Runtime's CUDA provider (and which providers it offers)
#   5. TensorRT: an FP16 engine built and profiled, where the tensorrt package is installed
# Each path prints one summary line: PASS / FAIL / SKIP, seconds, and what it measured or why it
# was skipped. Exit 0 when nothing failed. Usage (from the repository root, project installed):
#   bash tools/gpu_check.sh [WORK_DIR]        (default: a fresh temporary folder; PYTHON=... picks the interpreter)
set -uo pipefail
PY="${PYTHON:-python3}"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
DATA="synthetic:classes=4,train=256,test=64"
failures=0

line() { printf '%-5s %-22s %6ss  %s\n' "$1" "$2" "$3" "$4"; }

run_path() {  # name, seconds limit, command...: one PASS/FAIL line from the command's last output line
    local name="$1" limit="$2"; shift 2
    local start end out rc
    start=$(date +%s)
    out=$(timeout "$limit" "$@" 2>&1); rc=$?
    end=$(date +%s)
    if [ $rc -eq 0 ]; then
        line PASS "$name" $((end - start)) "$(printf '%s\n' "$out" | tail -n 1)"
    else
        failures=$((failures + 1))
        line FAIL "$name" $((end - start)) "exit $rc: $(printf '%s\n' "$out" | tail -n 3 | tr '\n' ' ')"
    fi
}

if ! "$PY" -c "import torch, compressor" 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch and compressor; install the project (README) or set PYTHON to its environment's python"
    exit 1
fi
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
providers=$("$PY" -c "import onnxruntime as o; print(','.join(o.get_available_providers()))" 2>/dev/null || echo "onnxruntime not importable")
echo "gpu_check: $gpus CUDA device(s); torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>/dev/null); ONNX Runtime providers: $providers"
if [ "$gpus" = "0" ]; then
    why="no CUDA device visible to torch (torch.cuda.is_available() is False)"
    for name in torch-cuda-profile distill-amp-fp16 distill-amp-bf16 ddp-nccl ort-cuda tensorrt; do line SKIP "$name" 0 "$why"; done
    exit 0
fi

# a teacher and a student checkpoint to work on (random weights: the paths, not the accuracy, are checked)
"$PY" - "$WORK" <<'EOF' || { echo "FAIL setup: could not write the checkpoints"; exit 1; }
import sys, torch
from compressor.models import create_model
torch.save(create_model("resnet32x4", num_classes=4).state_dict(), f"{sys.argv[1]}/teacher.pth")
torch.save(create_model("resnet8x4", num_classes=4).state_dict(), f"{sys.argv[1]}/student.pth")
EOF

run_path torch-cuda-profile 150 "$PY" - "$WORK" "$DATA" <<'EOF'
import json, subprocess, sys
work, data = sys.argv[1], sys.argv[2]
subprocess.run([sys.executable, "-m", "compressor", "profile", f"{work}/student.pth", "--backend", "torch-cuda,torch-cuda-fp16",
                "--batch", "1,32", "--iters", "30", "--data", data, "--out", f"{work}/profile", "--quiet"], check=True, capture_output=True)
report = json.load(open(f"{work}/profile/report.json"))
parts = []
for b in report["models"][0]["backends"]:
    if b["status"] != "ok":
        raise SystemExit(f"{b['backend']}: {b['reason']}")
    lat = {x["batch"]: x["p50_ms"] for x in b["latency"]}
    parts.append(f"{b['backend']} p50 {lat[1]:.2f} ms (b1) {lat[32]:.2f} ms (b32), CUDA peak {b['memory'].get('cuda_allocator_peak_mib', 0):.0f} MiB")
print("; ".join(parts))
EOF

for amp in fp16 bf16; do
    run_path "distill-amp-$amp" 120 "$PY" -m compressor distill --teacher "$WORK/teacher.pth" --student resnet8x4 --method at+kd \
        --data "$DATA" --epochs 1 --batch-size 64 --amp "$amp" --device cuda --out "$WORK/amp-$amp" --quiet
done

nproc=$(( gpus >= 2 ? 2 : 1 ))
run_path ddp-nccl 180 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m compressor.cli distill \
    --teacher "$WORK/teacher.pth" --student resnet8x4 --method at+kd --data "$DATA" --epochs 1 --batch-size 32 --device cuda \
    --out "$WORK/ddp" --quiet

case ",$providers," in
    *,CUDAExecutionProvider,*)
        run_path ort-cuda 120 "$PY" -m compressor profile "$WORK/student.pth" --backend ort-cuda --batch 1,32 --iters 30 \
            --out "$WORK/ort-cuda" --quiet ;;
    *) line SKIP ort-cuda 0 "ONNX Runtime offers no CUDAExecutionProvider (providers: $providers); install onnxruntime-gpu alone" ;;
esac

if "$PY" -c "import tensorrt" 2>/dev/null; then
    run_path tensorrt 240 "$PY" -m compressor profile "$WORK/student.pth" --backend tensorrt-fp16 --batch 1,32 --iters 30 \
        --out "$WORK/trt" --quiet
else
    line SKIP tensorrt 0 "the tensorrt package is not installed (the TensorRT container or pip install tensorrt provides it)"
fi

echo "gpu_check: $failures failure(s); work folder $WORK"
exit $(( failures > 0 ))
