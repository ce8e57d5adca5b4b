"""Bad input battery: every command, hostile or malformed input -> exit 2, a one-paragraph message
that says what is wrong, no traceback, and an output folder exactly as it was."""

import importlib.util
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from compressor.models import create_model

from compressor.cli import main

DATA = "synthetic:classes=4,train=32,test=16,size=16"


def _fuzz():
    """tools/fuzz_cli.py: its structural generators make the hostile files of this table too."""
    spec = importlib.util.spec_from_file_location("fuzz_cli", Path(__file__).resolve().parents[2] / "tools" / "fuzz_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = _fuzz()
ONNX_PHRASES = {"cyclic": "not a valid ONNX model", "unknown-domain": "not a valid ONNX model", "custom-op": "ONNX Runtime cannot load",
                "opset-99": "opset 99", "ir-99": "IR version 99", "recursive-function": "must not be recursive",
                "dataless-initializer": "not a valid ONNX model", "constant-of-shape-huge": "free here", "string-input": "STRING tensor",
                "zero-batch": "N, H, W >= 1", "huge-input": "free here", "endless-loop": "ran past 1 s",
                "external-data-outside": "outside the model's folder"}  # fmt: skip
SIDECAR_PHRASES = {"nested": "nests", "utf-16": "not UTF-8", "folder": "is a folder", "fifo": "not a regular file",
                   "input-size-huge": "free on this machine", "points-int": "points must be a list",
                   "arch-not-python": "not a Python file"}  # fmt: skip
BOMBS = ("webp", "tiff", "bmp")  # formats whose size Pillow reads from the header
PLAN_PHRASES = {"nested": "nests", "folder": "is a folder", "fifo": "not a regular file"}
YAML_PHRASES = {"nested": "nests", "flow-alias-bomb": "student.arch", "fifo": "not a regular file", "dev-zero": "not a regular file",
                "folder": "is a folder", "not-a-mapping": "mapping"}  # fmt: skip


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > PWNED",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    torch.save(create_model("resnet8", num_classes=4).state_dict(), d / "t.pth")
    torch.save(create_model("yolov3_darknet53_s", num_classes=2, input_size=(64, 64)).state_dict(), d / "yolo.pth")
    (d / "h.pth").write_text("hello, this is not a checkpoint\n")
    (d / "j.pth").write_text("just text\n")
    (d / "empty.pth").write_bytes(b"")
    with open(d / "evil.pth", "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)
    (d / "bad.onnx").write_bytes(b"\x08\x07 not a protobuf")
    (d / "empty.onnx").write_bytes(b"")
    student = d / "student.pt"
    torch.save(create_model("resnet8", num_classes=4).state_dict(), student)
    side = {"schema": "edge-compressor/student", "version": 1, "arch": "resnet8", "num_classes": 4, "input_size": [0, -1],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}  # fmt: skip
    (d / "student.json").write_text(json.dumps(side))
    (d / "latin1.yaml").write_bytes("student: {arch: r\xe9snet8}\n".encode("latin-1"))
    bomb = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
    for i, prev in zip("bcdefghi", "abcdefgh", strict=True):
        bomb += f"{i}: &{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
    (d / "bomb.yaml").write_text(bomb + "student: {arch: *i}\n")
    (d / "pipe.yaml").write_text("data: {train: 'synthetic:classes=4'}\nteacher: {arch: resnet8}\ndistill: {student: resnet8}\n")
    one_class = d / "oneclass" / "cat"
    one_class.mkdir(parents=True)
    import cv2
    import numpy as np

    cv2.imwrite(str(one_class / "a.png"), np.zeros((8, 8, 3), np.uint8))
    for cls in ("a", "b"):
        (d / "broken_images" / cls).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(d / "broken_images" / cls / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (d / "broken_images" / "b" / "3.png").write_bytes(b"\x89PNG truncated")
    for cls in ("a", "b"):
        (d / "huge_images" / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(d / "huge_images" / cls / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (d / "huge_images" / "b" / "1.png").write_bytes(_png_header(20000, 20000))  # in the train split
    cifar = d / "cifar-10-batches-py"
    cifar.mkdir()
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        with open(cifar / name, "wb") as f:
            pickle.dump(batch, f)
    with open(cifar / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": 2}, f)
    (d / "typed").mkdir()
    torch.save(create_model("resnet8", num_classes=4).state_dict(), d / "typed" / "student.pt")
    (d / "typed" / "student.json").write_text(json.dumps({**side, "input_size": [16, 16], "arch_kwargs": "x"}))
    (d / "onnx").mkdir()
    for kind in FUZZ.ONNX_KINDS:
        FUZZ.hostile_onnx(kind, d / "onnx" / f"{kind}.onnx")
    for kind in SIDECAR_PHRASES:
        (d / f"side-{kind}").mkdir()
        torch.save(create_model("resnet8", num_classes=4).state_dict(), d / f"side-{kind}" / "student.pt")
        FUZZ.hostile_json(kind, d / f"side-{kind}" / "student.json", {**side, "input_size": [16, 16]})
    for kind in PLAN_PHRASES:
        FUZZ.hostile_json(kind, d / f"plan-{kind}.json", {})
    for kind in YAML_PHRASES:
        FUZZ.hostile_yaml(kind, d / f"config-{kind}.yaml")
    for fmt in BOMBS:
        for cls in ("a", "b"):
            (d / f"bomb-{fmt}" / cls).mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(d / f"bomb-{fmt}" / cls / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
        FUZZ.big_image(fmt, d / f"bomb-{fmt}" / "b" / f"big.{fmt}", 8200, 8200)  # 67 MP: just over the limit
    state = create_model("resnet8", num_classes=4).state_dict()
    torch.save({k: v.to("meta") for k, v in state.items()}, d / "meta.pth")
    torch.save({k: torch.full_like(v, float("nan")) if k == "fc.weight" else v for k, v in state.items()}, d / "nan.pth")
    for name, corrupt in (("run-corrupt-metrics", True), ("run-report-folder", False)):  # a run folder as compressor run leaves it
        (d / name / "distill").mkdir(parents=True)
        (d / name / "distill" / "student.json").write_text(json.dumps({**side, "input_size": [16, 16], "metrics": {}}))
        (d / name / "distill" / "metrics.jsonl").write_text(
            '{"epoch": 1, "eval": {"top1": 5.0}}\n' + ('{"epoch": 2, "tra' if corrupt else "")
        )
        if not corrupt:
            (d / name / "report.html").mkdir()
    return d


def _png_header(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (the decompression-bomb shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def _cases(d: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (argv, a phrase the message must contain)."""
    o = ["--out", str(out)]
    hinted = ["distill", "--method", "at", "--teacher", str(d / "t.pth"), "--student", "resnet8", "--data", DATA, *o]
    profiled = ["--backend", "ort-cpu", "--batch", "1", "--iters", "1", "--warmup", "0", "--call-timeout", "1", *o]
    one_epoch = ["distill", "--method", "ce", "--student", "resnet8", "--epochs", "1", *o, "--data"]
    configured = ["distill", "--data", DATA, *o, "--config"]

    def exported(folder: Path) -> list[str]:
        return ["export", str(folder / "student.pt"), *o]

    def trust(kind: str) -> list[str]:
        return ["--trust-checkpoint"] if kind == "arch-not-python" else []

    return {
        "text file h": (["inspect", str(d / "h.pth")], "not a PyTorch file"),
        "text file j": (["select-hints", "--teacher", str(d / "j.pth"), "--data", DATA, *o], "not a PyTorch file"),
        "empty checkpoint": (["export", str(d / "empty.pth"), *o], "0 bytes"),
        "hostile pickle": (["inspect", str(d / "evil.pth")], "holds code"),
        "folder as checkpoint": (["inspect", str(d)], "is a folder"),
        "opset 99": (["export", str(d / "t.pth"), "--opset", "99", *o], "--opset 99"),
        "opset 5": (["export", str(d / "t.pth"), "--opset", "5", *o], "--opset 5"),
        "nms iou 2": (["export", str(d / "yolo.pth"), "--nms", "--nms-iou", "2", *o], "--nms-iou"),
        "nms score 0": (["export", str(d / "yolo.pth"), "--nms", "--nms-score", "0", *o], "--nms-score"),
        "nms score -1": (["export", str(d / "yolo.pth"), "--nms", "--nms-score", "-1", *o], "--nms-score"),
        "nms score 1.5": (["export", str(d / "yolo.pth"), "--nms", "--nms-score", "1.5", *o], "--nms-score"),
        "nms max 0": (["export", str(d / "yolo.pth"), "--nms", "--nms-max", "0", *o], "--nms-max"),
        "nms on a classifier": (["export", str(d / "t.pth"), "--nms", *o], "--nms is for detectors"),
        "int8 without calib": (["export", str(d / "t.pth"), "--int8", *o], "--calib"),
        "int8 bad calib": (["export", str(d / "t.pth"), "--int8", "--calib", "nosuchdata:x", *o], "unknown dataset"),
        "int8 calib zero": (["export", str(d / "t.pth"), "--int8", "--calib", DATA, "--calib-samples", "0", *o], "--calib-samples"),
        "trt without tensorrt": (["export", str(d / "t.pth"), "--trt", *o], "TensorRT"),
        "damaged onnx": (["profile", str(d / "bad.onnx"), *o], "not a readable ONNX"),
        "empty onnx": (["profile", str(d / "empty.onnx"), *o], "not a readable ONNX"),
        "sidecar size": (["profile", str(d / "student.pt"), *o], "input_size"),
        "no backend": (["profile", str(d / "t.pth"), "--backend", ",", *o], "names no backend"),
        "unknown backend": (["profile", str(d / "t.pth"), "--backend", "ort-tpu", *o], "unknown"),
        "device tpu (hints)": (["select-hints", "--teacher", str(d / "t.pth"), "--data", DATA, "--device", "tpu", *o], "not a device"),
        "device nonsense": (["select-hints", "--teacher", str(d / "t.pth"), "--data", DATA, "--device", "gpu0", *o], "not a device"),
        "workers -1": (["select-hints", "--teacher", str(d / "t.pth"), "--data", DATA, "--workers", "-1", *o], "workers=-1"),
        "device tpu (distill)": (
            ["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--device", "tpu", *o],
            "not a device",
        ),
        "unknown student": (["distill", "--method", "ce", "--student", "resnet33", "--data", DATA, *o], "unknown model 'resnet33'"),
        "config not utf-8": (["distill", "--config", str(d / "latin1.yaml"), "--data", DATA, *o], "not UTF-8"),
        "yaml alias bomb": (["distill", "--config", str(d / "bomb.yaml"), "--data", DATA, *o], "student.arch"),
        "one-class folder": (
            ["distill", "--method", "ce", "--student", "resnet8", "--data", f"imagefolder:{d / 'oneclass'}:size=16", *o],
            "at least 2",
        ),  # fmt: skip
        "cifar size option": (["select-hints", "--teacher", str(d / "t.pth"), "--data", f"cifar10:{d}:size=96", *o], "cifar10"),
        "pipeline name ..": (["run", str(d / "pipe.yaml"), "--set", "name=.."], "name"),
        "corrupt image, loader workers": (
            [
                "distill",
                "--method",
                "ce",
                "--student",
                "resnet8",
                "--data",
                f"imagefolder:{d / 'broken_images'}:size=8",
                "--workers",
                "1",
                "--epochs",
                "1",
                *o,
            ],
            "could not be decoded",
        ),  # fmt: skip
        "image bomb": (
            ["distill", "--method", "ce", "--student", "resnet8", "--data", f"imagefolder:{d / 'huge_images'}:size=8", "--epochs", "1", *o],
            "20000 x 20000",
        ),
        "cifar meta without label_names": (["select-hints", "--teacher", str(d / "t.pth"), "--data", f"cifar10:{d}", *o], "label_names"),
        "sidecar field of the wrong type": (["export", str(d / "typed" / "student.pt"), *o], "arch_kwargs must be a dict"),
        # values
        "nan float flag": (["select-hints", "--teacher", str(d / "t.pth"), "--data", DATA, "--rbf-bandwidth", "nan", *o], "not a finite"),
        "inf lr": (["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--lr", "inf", *o], "not a finite number"),
        "inf lr in --set": (
            ["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--set", "optim.lr=.inf", *o],
            "optim.lr",
        ),
        "empty --out": (["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", ""], "folder name is empty"),
        "empty --seeds": (["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--seeds", "", *o], "--seeds takes"),
        "method of one +": (["distill", "--method", "+", "--student", "resnet8", "--data", DATA, *o], "empty term"),
        "kwargs the model lacks": (
            ["distill", "--method", "ce", "--student", "resnet8", "--student-kwargs", "foo=1", "--data", DATA, *o],
            "cannot be built",
        ),  # fmt: skip
        "kwargs the zoo fixes": (["inspect", "wrn_16_2", "--arch-kwargs", "depth=abc"], "it takes drop_rate"),
        "input size 10^6": (["export", str(d / "t.pth"), "--input-size", "1000000", "1000000", *o], "free on this machine"),
        "batch 10^9": (["profile", str(d / "t.pth"), "--backend", "ort-cpu", "--batch", "1000000000", *o], "free on this machine"),
        "image size 10^5": (
            ["distill", "--method", "ce", "--student", "resnet8", "--data", f"imagefolder:{d / 'bomb-bmp'}:size=100000", *o],
            "64 MP",
        ),  # fmt: skip
        # checkpoints
        "meta tensors": (["export", str(d / "meta.pth"), *o], "meta tensors"),
        "nan weights": (["export", str(d / "nan.pth"), *o], "NaN or inf weights in 1 tensor(s): fc.weight"),
        # configs and commands
        "hevc --jobs -1": (["hevc", "convert", str(d / "broken_images" / "a"), str(out / "hevc"), "--jobs", "-1"], "--jobs -1"),
        "hevc unknown preset": (["hevc", "convert", str(d / "broken_images" / "a"), str(out / "hevc"), "--preset", "fastest"], "x265's"),
        "cross-distill image_size 0": (["cross-distill", "--example", "recognition", "--set", "data.image_size=[0,0]", *o], "image_size"),
        "report: corrupt metrics.jsonl": (["report", str(d / "run-corrupt-metrics")], "line 2"),
        "report: report.html a folder": (["report", str(d / "run-report-folder")], "is a folder"),
        "inspect a broken ONNX file": (["inspect", str(d / "onnx" / "cyclic.onnx")], "not a valid ONNX model"),
        **{f"hint plan {kind}": ([*hinted, "--hints", str(d / f"plan-{kind}.json")], phrase) for kind, phrase in PLAN_PHRASES.items()},
        **{f"ONNX {kind}": (["profile", str(d / "onnx" / f"{kind}.onnx"), *profiled], phrase) for kind, phrase in ONNX_PHRASES.items()},
        **{f"sidecar {kind}": ([*exported(d / f"side-{kind}"), *trust(kind)], phrase) for kind, phrase in SIDECAR_PHRASES.items()},
        **{f"config {kind}": ([*configured, str(d / f"config-{kind}.yaml")], phrase) for kind, phrase in YAML_PHRASES.items()},
        **{f"image bomb {fmt}": ([*one_epoch, f"imagefolder:{d / f'bomb-{fmt}'}:size=8"], "8200 x 8200") for fmt in BOMBS},
    }


CASES = list(_cases(Path("d"), Path("o")))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_a_message_and_changes_nothing(case, files, tmp_path, capsys, monkeypatch):
    if case == "trt without tensorrt" and torch.cuda.is_available():
        pytest.skip("a GPU is present: TensorRT may be too")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv, phrase = _cases(files, out)[case]
    before = sorted(p.name for p in files.iterdir())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and "\n\n" not in err.strip()
    assert len(err) < 2000, "a message, not a dump"
    assert phrase in err, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in files.iterdir()) == before
    assert not (tmp_path / "PWNED").exists()


def test_a_folder_with_equals_in_its_name_can_be_named(tmp_path, capsys):
    import cv2
    import numpy as np

    root = tmp_path / "data=v2"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / cls / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    from compressor.data import open_dataset

    assert len(open_dataset(f"imagefolder:{root}")) == 2 and len(open_dataset(f"imagefolder:{root}", "test")) == 2
