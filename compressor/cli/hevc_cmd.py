"""``compressor hevc``: HEVC compressed-domain data for cross distillation.

``check`` validates a paired pixel / HEVC set (and its YOLO labels) before training: every
unmatched file and malformed label line is reported, and the exit code is 2 when any exists.
"""

from __future__ import annotations

import argparse

from ..errors import UserError

NAME = "hevc"
HELP = "HEVC compressed-domain data: check that pixel and HEVC image sets pair up"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="hevc_command", metavar="SUBCOMMAND", required=True)
    check = sub.add_parser("check", help="pair pixel and HEVC images by file stem; validate YOLO labels")
    check.add_argument("--pixel", required=True, metavar="DIR", help="pixel-domain images")
    check.add_argument("--hevc", required=True, metavar="DIR", help="HEVC-domain images (same relative paths, any image extension)")
    check.add_argument("--labels", metavar="DIR", help="YOLO label files (<stem>.txt) for detection")
    check.add_argument("--num-classes", type=int, help="detection classes, to check label class ids")


def run(args: argparse.Namespace) -> int:
    from ..data.paired import check_pairs

    report = check_pairs(args.pixel, args.hevc, args.labels, args.num_classes)
    if not report.ok:
        raise UserError(f"the pixel and HEVC sets do not pair up: {report.summary()}. Fix or remove those files, then check again")
    print(f"OK: {report.summary()}")
    return 0
