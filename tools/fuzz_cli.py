"""Fuzz the CLI: random mutations of valid inputs for a bounded time; report every traceback or exit code other than 0 / 2.

    python tools/fuzz_cli.py [--seconds 300] [--seed 0] [--out runs/fuzz]

It makes a small valid world once (a resnet8 checkpoint, a finished student run, its ONNX export,
a distillation config, an image folder), then repeatedly picks a command and mutates one of its
inputs: bytes of a checkpoint / ONNX file / config / image flipped, truncated or replaced; a flag value
swapped for an out-of-range, wrong-typed or empty one; a sidecar field changed. Each case runs as
``python -m compressor`` in a subprocess with a time limit, in a fresh output folder. A case fails
when the process prints a Python traceback or exits with anything but 0 or 2. Failing cases are
written to OUT/failures.jsonl (the command line and the mutated file) so they can be replayed.
Every mutated file lives under OUT; nothing else is touched.

Besides byte mutations it draws from structural generators (also used by the bad-input table test):
ONNX graph mutations (``hostile_onnx``: cycles, unknown operators and domains, IR/opset versions,
recursive functions, huge or data-less initializers, string inputs, zero batch, endless loops,
external data outside the model's folder), sidecar and hint-plan JSON structure (``hostile_json``),
YAML structure (``hostile_yaml``), special files where a file is expected (``special_file``: FIFO,
/dev/zero, a folder, a link out) and image formats beyond PNG/JPEG (``big_image``: WebP, TIFF, BMP).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = "synthetic:classes=4,train=32,test=16,size=16"
BAD_VALUES = ["-1", "0", "1e309", "nan", "", "abc", "99999999", "1.5", ",", "../..", "-0", "３"]


def make_world(root: Path) -> dict[str, Path]:
    """Valid inputs, made once with the CLI itself."""
    import cv2
    import numpy as np
    import torch
    from compressor.models import create_model

    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "t.pth"
    torch.save(create_model("resnet8", num_classes=4).state_dict(), ckpt)
    run = root / "run"
    _cli(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--epochs", "1", "--out", str(run), "--quiet"], 300)
    _cli(["export", str(run / "student.pt"), "--out", str(root / "export")], 300)
    config = root / "distill.yaml"
    config.write_text(
        f"student: {{arch: resnet8}}\ndata: {{train: '{DATA}', batch_size: 16}}\nloss: {{method: ce}}\ntrain: {{epochs: 1}}\n"
    )
    images = root / "images"
    for cls in ("a", "b"):
        (images / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            cv2.imwrite(str(images / cls / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    return {"ckpt": ckpt, "student": run / "student.pt", "sidecar": run / "student.json", "onnx": root / "export" / "student.onnx",
            "config": config, "images": images}  # fmt: skip


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["flip", "truncate", "empty", "garbage", "prefix", "duplicate"])
    if kind == "flip" and data:
        b = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "truncate":
        return data[: rng.randrange(max(1, len(data)))]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    if kind == "prefix":
        return rng.choice([b"h", b"j", b"PK\x03\x04", b"\x80\x02", b"\xff\xfe"]) + data
    return data + data


def mutate_sidecar(meta: dict, rng: random.Random) -> dict:
    meta = dict(meta)
    key = rng.choice(["input_size", "mean", "std", "arch", "num_classes", "digest", "schema", "arch_kwargs"])
    meta[key] = rng.choice([None, [0, -1], [1], "x", -3, {"a": 1}, [float("inf")] * 3, "tests/nowhere.py:f"])
    return meta


def cases(world: dict[str, Path], case_dir: Path, rng: random.Random) -> list[str]:
    """One command line, with its inputs mutated into ``case_dir``."""
    out = str(case_dir / "out")
    kind = rng.choice(["ckpt", "onnx", "sidecar", "config", "flag", "image", "onnx-structure", "json-structure", "yaml-structure",
                       "image-format"])  # fmt: skip
    if kind == "onnx-structure":
        bad = hostile_onnx(rng.choice(ONNX_KINDS), case_dir / "graph.onnx")
        return rng.choice([["profile", str(bad), "--batch", "1", "--iters", "2", "--warmup", "0", "--call-timeout", "5", "--out", out],
                           ["inspect", str(bad)], ["export", str(bad), "--int8", "--calib", DATA, "--out", out]])  # fmt: skip
    if kind == "json-structure":
        shutil.copy(world["student"], case_dir / "student.pt")
        json_kind = rng.choice(JSON_KINDS)
        hostile_json(json_kind, case_dir / "student.json", json.loads(world["sidecar"].read_text()))
        if rng.random() < 0.5:
            plan = hostile_json(json_kind, case_dir / "plan.json", {"schema": "edge-compressor/hint-plan", "version": 1})
            return ["distill", "--method", "at", "--teacher", str(world["ckpt"]), "--student", "resnet8", "--data", DATA, "--hints",
                    str(plan), "--epochs", "1", "--out", out, "--quiet"]  # fmt: skip
        return rng.choice([["export", str(case_dir / "student.pt"), "--out", out], ["inspect", str(case_dir / "student.pt")],
                           ["profile", str(case_dir / "student.pt"), "--backend", "ort-cpu", "--out", out]])  # fmt: skip
    if kind == "yaml-structure":
        config = hostile_yaml(rng.choice(YAML_KINDS), case_dir / "config.yaml")
        return rng.choice([["distill", "--config", str(config), "--out", out, "--quiet"], ["run", str(config)],
                           ["cross-distill", "--config", str(config), "--out", out, "--quiet"]])  # fmt: skip
    if kind == "image-format":
        folder = case_dir / "images"
        shutil.copytree(world["images"], folder)
        fmt = rng.choice(["webp", "tiff", "bmp"])
        big_image(fmt, folder / "b" / f"big.{fmt}", rng.choice([8200, 4000]), rng.choice([8200, 4000]))
        return ["distill", "--method", "ce", "--student", "resnet8", "--data", f"imagefolder:{folder}:size=16", "--epochs", "1",
                "--out", out, "--quiet"]  # fmt: skip
    if kind == "ckpt":
        bad = case_dir / "bad.pth"
        bad.write_bytes(mutate_bytes(world["ckpt"].read_bytes(), rng))
        return rng.choice([
            ["inspect", str(bad)],
            ["export", str(bad), "--out", out],
            ["profile", str(bad), "--backend", "ort-cpu", "--out", out],
            ["select-hints", "--teacher", str(bad), "--data", DATA, "--samples", "8", "--out", out],
        ])  # fmt: skip
    if kind == "onnx":
        bad = case_dir / "bad.onnx"
        bad.write_bytes(mutate_bytes(world["onnx"].read_bytes(), rng))
        return ["profile", str(bad), "--batch", "1", "--iters", "2", "--warmup", "0", "--out", out]
    if kind == "sidecar":
        shutil.copy(world["student"], case_dir / "student.pt")
        meta = mutate_sidecar(json.loads(world["sidecar"].read_text()), rng)
        (case_dir / "student.json").write_text(json.dumps(meta))
        return rng.choice([["export", str(case_dir / "student.pt"), "--out", out], ["inspect", str(case_dir / "student.pt")]])
    if kind == "config":
        bad = case_dir / "bad.yaml"
        bad.write_bytes(mutate_bytes(world["config"].read_bytes(), rng))
        return ["distill", "--config", str(bad), "--out", out, "--quiet"]
    if kind == "image":
        folder = case_dir / "images"
        shutil.copytree(world["images"], folder)
        victim = rng.choice(sorted(folder.rglob("*.png")))
        victim.write_bytes(mutate_bytes(victim.read_bytes(), rng))
        return ["distill", "--method", "ce", "--student", "resnet8", "--data", f"imagefolder:{folder}:size=16", "--epochs", "1",
                "--workers", rng.choice(["0", "1"]), "--out", out, "--quiet"]  # fmt: skip
    flag, base = rng.choice(
        [
            ("--opset", ["export", str(world["ckpt"]), "--out", out]),
            ("--calib-samples", ["export", str(world["ckpt"]), "--int8", "--calib", DATA, "--out", out]),
            ("--batch", ["profile", str(world["ckpt"]), "--backend", "ort-cpu", "--out", out]),
            ("--iters", ["profile", str(world["ckpt"]), "--backend", "ort-cpu", "--out", out]),
            ("--k", ["select-hints", "--teacher", str(world["ckpt"]), "--data", DATA, "--out", out]),
            ("--samples", ["select-hints", "--teacher", str(world["ckpt"]), "--data", DATA, "--out", out]),
            ("--epochs", ["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", out, "--quiet"]),
            ("--data", ["distill", "--method", "ce", "--student", "resnet8", "--epochs", "1", "--out", out, "--quiet"]),
            ("--input-size", ["inspect", "resnet8"]),
            ("--arch-kwargs", ["inspect", "resnet8"]),
        ]
    )
    return [*base, flag, rng.choice(BAD_VALUES)]


ONNX_KINDS = ("cyclic", "unknown-domain", "custom-op", "opset-99", "ir-99", "recursive-function", "dataless-initializer",
              "constant-of-shape-huge", "string-input", "zero-batch", "huge-input", "endless-loop", "external-data-outside")  # fmt: skip


def hostile_onnx(kind: str, path: Path) -> Path:
    """A small ONNX file of the ``kind`` of ``ONNX_KINDS`` at ``path``: (1, 3, 16, 16) image in, (1, 3) out."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    def value(name, shape, elem=T.FLOAT):
        return h.make_tensor_value_info(name, elem, shape)

    pool = [h.make_node("GlobalAveragePool", ["z"], ["p"]), h.make_node("Flatten", ["p"], ["y"])]
    image, nodes, inits, opsets, functions = value("x", [1, 3, 16, 16]), [h.make_node("Identity", ["x"], ["z"])], [], [("", 17)], []
    ir, inputs, outputs = 8, None, [value("y", [1, 3])]
    if kind == "cyclic":
        nodes = [h.make_node("Add", ["x", "b"], ["a"]), h.make_node("Add", ["a", "x"], ["b"]), h.make_node("Identity", ["b"], ["z"])]
    elif kind in ("unknown-domain", "custom-op"):  # custom-op imports its domain, so only ONNX Runtime finds the operator missing
        nodes = [h.make_node("Foo", ["x"], ["z"], domain="my.domain")]
        opsets += [("my.domain", 1)] if kind == "custom-op" else []
    elif kind == "opset-99":
        opsets = [("", 99)]
    elif kind == "ir-99":
        ir = 99
    elif kind == "recursive-function":
        f = h.make_function(
            "my", "F", ["a"], ["b"], [h.make_node("F", ["a"], ["b"], domain="my")], [h.make_opsetid("", 17), h.make_opsetid("my", 1)]
        )
        nodes, opsets, functions = [h.make_node("F", ["x"], ["z"], domain="my")], [("", 17), ("my", 1)], [f]
    elif kind == "dataless-initializer":
        w = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[1, 3, 16, 16])  # dims claimed, no data
        nodes, inits = [h.make_node("Add", ["x", "w"], ["z"])], [w]
    elif kind == "constant-of-shape-huge":  # broadcasts with the image: 10^8 x 3 x 16 x 16 floats, 286 GiB
        inits = [h.make_tensor("shape", T.INT64, [5], [100_000_000, 1, 3, 16, 16])]
        nodes = [h.make_node("ConstantOfShape", ["shape"], ["c"]), h.make_node("Add", ["x", "c"], ["s"]),
                 h.make_node("ReduceMean", ["s"], ["z"], axes=[0], keepdims=0)]  # fmt: skip
    elif kind == "string-input":
        image, pool, outputs = value("x", [1, 3, 16, 16], T.STRING), [], [value("z", [1, 3, 16, 16], T.STRING)]
    elif kind == "zero-batch":
        image, outputs = value("x", [0, 3, 16, 16]), [value("y", [0, 3])]
    elif kind == "huge-input":
        image = value("x", [1, 3, 100_000, 100_000])
    elif kind == "endless-loop":  # trip count 2^62, condition always true
        body = h.make_graph([h.make_node("Identity", ["cond"], ["cond_out"]), h.make_node("Identity", ["v"], ["v_out"])], "body",
                            [value("i", [], T.INT64), value("cond", [], T.BOOL), value("v", None)],
                            [value("cond_out", [], T.BOOL), value("v_out", None)])  # fmt: skip
        inits = [h.make_tensor("trips", T.INT64, [], [2**62]), h.make_tensor("go", T.BOOL, [], [True])]
        nodes = [h.make_node("Loop", ["trips", "go", "x"], ["z"], body=body)]
    elif kind == "external-data-outside":
        w = h.make_tensor("w", T.FLOAT, [1, 3, 16, 16], [0.0] * 768)
        w.data_location, w.raw_data = T.EXTERNAL, b""
        del w.float_data[:]
        w.external_data.add(key="location", value="../outside.bin")
        nodes, inits = [h.make_node("Add", ["x", "w"], ["z"])], [w]
    elif kind != "valid":
        raise ValueError(f"unknown ONNX kind {kind!r}; known: {', '.join(ONNX_KINDS)}")
    graph = h.make_graph(nodes + pool, "g", inputs or [image], outputs, inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid(d, v) for d, v in opsets], functions=functions)
    model.ir_version = ir
    path.write_bytes(model.SerializeToString())
    return path


JSON_KINDS = ("nested", "utf-16", "folder", "fifo", "not-an-object", "input-size-huge", "points-int", "arch-not-python")


def hostile_json(kind: str, path: Path, valid: dict) -> Path:
    """A sidecar or hint plan at ``path``: ``valid`` (a good one) broken in the way ``kind`` names."""
    import os

    if kind == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "utf-16":
        path.write_bytes(json.dumps(valid).encode("utf-16"))
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "not-an-object":
        path.write_text(json.dumps([valid]))
    else:
        field, value = {"input-size-huge": ("input_size", [1_000_000, 1_000_000]), "points-int": ("points", 5),
                        "arch-not-python": ("arch", "/etc/passwd:x")}[kind]  # fmt: skip
        path.write_text(json.dumps({**valid, field: value}))
    return path


YAML_KINDS = ("nested", "flow-alias-bomb", "fifo", "dev-zero", "folder", "not-a-mapping")


def hostile_yaml(kind: str, path: Path) -> Path:
    """A config at ``path`` (a link to /dev/zero for ``dev-zero``) broken in the way ``kind`` names."""

    if kind == "nested":
        path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    elif kind == "flow-alias-bomb":  # 9^8 references, written in flow style
        text = "a: &a [x, x, x, x, x, x, x, x, x]\n"
        for name, prev in zip("bcdefgh", "abcdefg", strict=True):
            text += f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]\n"
        path.write_text(text + "student: {arch: *h}\n")
    elif kind in ("fifo", "dev-zero", "folder"):
        special_file(kind, path)
    elif kind == "not-a-mapping":
        path.write_text("- student\n- resnet8\n")
    else:
        raise ValueError(f"unknown YAML kind {kind!r}; known: {', '.join(YAML_KINDS)}")
    return path


def special_file(kind: str, path: Path) -> Path:
    """Something that is not a regular file where one is expected: fifo, dev-zero (a link), folder, link-out."""
    import os

    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "link-out":
        path.symlink_to("/etc/hostname")
    else:
        raise ValueError(f"unknown special file {kind!r}")
    return path


def big_image(fmt: str, path: Path, width: int = 10_000, height: int = 9_000) -> Path:
    """A cheaply compressed image of ``width`` x ``height`` (90 MP by default) in ``fmt`` (webp, tiff, bmp, ...)."""
    from PIL import Image

    Image.new("1" if fmt != "webp" else "L", (width, height)).save(path, format=fmt.upper())
    return path


def _cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compressor", *args], capture_output=True, text=True, timeout=timeout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300, help="how long to fuzz (the world is made first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case-timeout", type=float, default=120)
    ap.add_argument("--out", default="runs/fuzz", help="folder for the world, the cases and failures.jsonl")
    args = ap.parse_args()
    root = Path(args.out)
    world = make_world(root / "world")
    rng = random.Random(args.seed)
    failures, counts, start, n = [], {"0": 0, "2": 0, "other": 0}, time.time(), 0
    while time.time() - start < args.seconds:
        n += 1
        case_dir = root / "cases" / f"{n:05d}"
        shutil.rmtree(case_dir, ignore_errors=True)
        case_dir.mkdir(parents=True)
        argv = cases(world, case_dir, rng)
        try:
            done = _cli(argv, args.case_timeout)
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired:
            code, output = "timeout", ""
        bad = code not in (0, 2) or "Traceback (most recent call last)" in output
        counts[str(code) if code in (0, 2) else "other"] += 1
        if bad:
            failures.append({"case": n, "argv": argv, "exit": code, "tail": output[-1500:]})
            print(f"case {n}: exit {code}: {' '.join(argv)}", flush=True)
        else:
            shutil.rmtree(case_dir)  # keep only what failed
    (root / "failures.jsonl").write_text("".join(json.dumps(f) + "\n" for f in failures))
    print(f"{n} cases in {time.time() - start:.0f} s: exit 0 x{counts['0']}, exit 2 x{counts['2']}, other x{counts['other']}; "
          f"{len(failures)} failures (tracebacks or other exit codes) -> {root / 'failures.jsonl'}")  # fmt: skip
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
