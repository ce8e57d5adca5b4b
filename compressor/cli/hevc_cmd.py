"""``compressor hevc``: HEVC compressed-domain data for cross distillation.

``convert`` encodes every image of a folder all-intra with x265 (Debian's binary or the ffmpeg
of imageio-ffmpeg) and writes its prediction-based (or block-partition) image, in parallel with
a progress bar and a manifest.
``check`` validates a paired pixel / HEVC set (and its YOLO labels) before training: every
unmatched file and malformed label line is reported, and the exit code is 2 when any exists.
"""

from __future__ import annotations

import argparse

from ..errors import UserError
from ..outdir import claim

NAME = "hevc"
HELP = "HEVC compressed-domain data: convert images with x265; check that pixel and HEVC sets pair up"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="hevc_command", metavar="SUBCOMMAND", required=True)
    convert = sub.add_parser("convert", help="encode images all-intra with x265 and write HEVC prediction (or partition) images")
    convert.add_argument("src", metavar="SRC", help="folder of images (searched recursively)")
    convert.add_argument("dst", metavar="DST", help="output folder (same relative paths, .png); new, empty, or a previous run's")
    convert.add_argument("--qp", type=int, default=32, help="constant QP, 0..51 (default: 32)")
    convert.add_argument("--variant", default="prediction", help="prediction (grey = round(255 m / 34)) or partition (default: prediction)")
    convert.add_argument("--preset", default="medium", help="x265 preset (default: medium)")
    convert.add_argument("--ctu", type=int, default=64, help="CTU size 16/32/64 (default: 64)")
    convert.add_argument("--min-cu", type=int, default=8, help="minimum CU size (default: 8)")
    convert.add_argument("--levels", metavar="SIZE=GREY,...", help="partition variant's grey level per coding-block size "
                         "(default 64=0,32=64,16=128,8=192,4=255; the thesis does not publish them)")  # fmt: skip
    convert.add_argument(
        "--encoder", default="auto", choices=("auto", "x265", "ffmpeg"), help="x265 binary or imageio-ffmpeg's ffmpeg (default: auto)"
    )
    convert.add_argument(
        "--allow-unverified-encoder", action="store_true", help="accept an x265 version whose analysis layout was not verified"
    )
    convert.add_argument("--jobs", type=int, default=0, help="parallel encodes (default: one per CPU)")
    check = sub.add_parser("check", help="pair pixel and HEVC images by file stem; validate YOLO labels")
    check.add_argument("--pixel", required=True, metavar="DIR", help="pixel-domain images")
    check.add_argument("--hevc", required=True, metavar="DIR", help="HEVC-domain images (same relative paths, any image extension)")
    check.add_argument("--labels", metavar="DIR", help="YOLO label files (<stem>.txt) for detection")
    check.add_argument("--num-classes", type=int, help="detection classes, to check label class ids")


def parse_levels(text: str | None) -> dict[int, int] | None:
    if not text:
        return None
    try:
        return {int(k): int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise UserError(f"--levels {text!r}: expected SIZE=GREY pairs such as 64=0,32=64,16=128,8=192,4=255") from None


def run(args: argparse.Namespace) -> int:
    return convert(args) if args.hevc_command == "convert" else check(args)


def convert(args: argparse.Namespace) -> int:
    from ..hevc import ConvertOptions, EncoderSettings, convert_folder, find_encoder

    options = ConvertOptions(
        args.variant, EncoderSettings(args.qp, args.preset, args.ctu, args.min_cu), parse_levels(args.levels), args.jobs
    )
    encoder = find_encoder(args.encoder, args.allow_unverified_encoder)
    with claim(args.dst, [], "hevc convert", reuse=True):  # a second run into DST resumes from its manifest
        manifest = convert_folder(args.src, args.dst, encoder, options)
    print(f"{len(manifest['images'])} HEVC {args.variant} images in {args.dst} ({encoder.kind}, x265 {encoder.version}, QP {args.qp})")
    return 0


def check(args: argparse.Namespace) -> int:
    from ..data.paired import check_pairs

    report = check_pairs(args.pixel, args.hevc, args.labels, args.num_classes)
    if not report.ok:
        raise UserError(f"the pixel and HEVC sets do not pair up: {report.summary()}. Fix or remove those files, then check again")
    print(f"OK: {report.summary()}")
    return 0
