"""``compressor inspect``: size, compute and hint candidates of a zoo model or a checkpoint."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from compressor.models import MODELS, ModelReferenceError, is_factory

from ..checkpoint import TRUST_FLAG, load_checkpoint
from ..errors import UserError
from ..summary import describe_model, format_summary
from .refs import KWARGS_HELP, POINTS_HELP, REF_HELP, parse_globs, parse_kwargs

NAME = "inspect"
HELP = "show parameters, MACs and candidate hint points of a zoo model or checkpoint"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="ARCH_OR_CHECKPOINT", help=f"checkpoint file, or a model: {REF_HELP}")
    p.add_argument("--arch", help=f"architecture of the checkpoint (inferred when left out): {REF_HELP}")
    p.add_argument("--arch-kwargs", type=parse_kwargs, metavar="K=V,...", help=KWARGS_HELP)
    p.add_argument("--points", type=parse_globs, metavar="GLOB,...", help=POINTS_HELP)
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the checkpoint's, or 100/1000)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="input height and width")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow full unpickling of a checkpoint you trust")


def run(args: argparse.Namespace) -> int:
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.input_size is not None and min(args.input_size) < 1:
        raise UserError(f"--input-size must be two positive integers, got {args.input_size}")
    extra = {}
    size = tuple(args.input_size) if args.input_size else None
    if Path(args.target).is_dir():
        raise UserError(f"{args.target} is a folder; give a checkpoint file inside it, or a model name")
    if Path(args.target).suffix == ".onnx" and Path(args.target).exists():
        return _inspect_onnx(Path(args.target), size, args.json)
    if Path(args.target).is_file():
        loaded = load_checkpoint(args.target, arch=args.arch, num_classes=args.num_classes, trusted=args.trust_checkpoint,
                                 kwargs=args.arch_kwargs, points=args.points, input_size=size)  # fmt: skip
        target = loaded.arch if loaded.arch in MODELS and not args.points else loaded.model
        arch, num_classes, size = target, loaded.num_classes, size or loaded.input_size
        extra = {"checkpoint": str(args.target), "layout": loaded.layout, "digest": loaded.digest, "meta": loaded.meta}
    elif args.target in MODELS or is_factory(args.target):
        arch, num_classes = args.target, args.num_classes
    elif _looks_like_path(args.target):
        raise UserError(f"checkpoint {args.target} does not exist (relative paths start at {Path.cwd()})")
    else:
        raise UserError(f"{args.target!r} is neither a checkpoint file nor a model; " + MODELS.unknown_message(args.target))
    try:
        info = describe_model(arch, num_classes, size, args.arch_kwargs, args.points)
    except ModelReferenceError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps({**info, **extra}))
    else:
        if extra:
            print(f"checkpoint    {extra['checkpoint']} [{extra['layout']}] {extra['digest'][:19]}...")
        print(format_summary(info))
    return 0


def _inspect_onnx(path: Path, size: tuple[int, int] | None, as_json: bool) -> int:
    """An exported graph has no hint points to find: say what it takes and gives, checked as profiling would."""
    import onnx

    from compressor.deploy.artifact import check_sidecar, onnx_artifact, sidecar_of
    from compressor.deploy.profile.analytic import onnx_macs

    meta = sidecar_of(path) or {}
    check_sidecar(path, meta)
    art = onnx_artifact(path, meta, size)
    graph = art.meta["input"]
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    info = {"onnx": str(path), "input": graph["input_name"], "input_shape": graph["input_shape"], "input_dtype": graph["input_dtype"],
            "outputs": graph["outputs"], "num_classes": art.num_classes or None, "params": graph["params"],
            "macs": onnx_macs(model, art.input_size), "input_size": list(art.input_size), "arch": art.arch, "opsets": opsets,
            "ir_version": model.ir_version, "ops": dict(ops.most_common())}  # fmt: skip
    if as_json:
        print(json.dumps(info))
        return 0
    print(f"onnx          {path} (an exported graph: hint points are found in the PyTorch model, not here)")
    print(f"input         {info['input']} {info['input_shape']} {info['input_dtype']}")
    print(f"outputs       {', '.join(info['outputs'])}" + (f" ({info['num_classes']} classes)" if info["num_classes"] else ""))
    print(f"parameters    {info['params']:,}" + (f"  (exported from {info['arch']})" if info["arch"] else ""))
    macs = f"{info['macs'] / 1e6:.2f} M at {art.input_size[0]}x{art.input_size[1]}" if info["macs"] is not None else "unknown"
    print(f"MACs          {macs}")
    print(f"opsets        {', '.join(f'{d} {v}' for d, v in opsets.items())} (IR {model.ir_version})")
    print(f"operators     {', '.join(f'{op} x{n}' for op, n in ops.most_common())}")
    return 0


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith((".pt", ".pth", ".ckpt", ".tar", ".bin"))
