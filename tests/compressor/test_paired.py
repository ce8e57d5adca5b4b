import cv2
import numpy as np
import pytest

from compressor.cli import main
from compressor.data.paired import check_pairs, parse_yolo_labels


def image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((12, 16, 3), value, np.uint8))


@pytest.fixture
def paired(tmp_path):
    for stem in ("a/001", "a/002", "b/003"):
        image(tmp_path / "pixel" / f"{stem}.png")
        image(tmp_path / "hevc" / f"{stem}.bmp", 128)  # another extension pairs all the same
        (tmp_path / "labels" / stem).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.1\n1 0.25 0.75 0.1 0.1\n")
    return tmp_path


def test_pairs_by_relative_stem(paired):
    report = check_pairs(paired / "pixel", paired / "hevc", paired / "labels", num_classes=2)
    assert report.ok and [s for s, _, _ in report.pairs] == ["a/001", "a/002", "b/003"]


def test_unpaired_sets_exit_2_and_name_the_files(paired, capsys):
    image(paired / "pixel" / "a" / "004.png")
    image(paired / "hevc" / "b" / "005.png")
    (paired / "hevc" / "a" / "002.bmp").unlink()
    rc = main(["hevc", "check", "--pixel", str(paired / "pixel"), "--hevc", str(paired / "hevc")])
    err = capsys.readouterr().err
    assert rc == 2 and "do not pair up" in err
    assert "2 only in the pixel set: a/002, a/004" in err and "1 only in the HEVC set: b/005" in err


def test_malformed_and_missing_labels(paired, capsys):
    (paired / "labels" / "a" / "001.txt").write_text("0 0.5 0.5 0.2\n7 0.5 0.5 0.2 0.2\nx 1 1 1 1\n0 1.5 0.5 0.2 0.2\n")
    (paired / "labels" / "b" / "003.txt").unlink()
    rc = main(["hevc", "check", "--pixel", str(paired / "pixel"), "--hevc", str(paired / "hevc"), "--labels", str(paired / "labels"),
               "--num-classes", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert (
        rc == 2 and "4 malformed label lines" in err and "001.txt:1: 4 fields" in err and "1 images without a label file: b/003.txt" in err
    )


def test_yolo_parser():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "l.txt"
        f.write_text("1 0.5 0.4 0.3 0.2\n\n2 0.1 0.1 0.05 0.05\n")
        rows, problems = parse_yolo_labels(f, num_classes=3)
    assert problems == [] and rows.shape == (2, 5) and rows[0].tolist() == pytest.approx([1, 0.5, 0.4, 0.3, 0.2])


def test_ok_sets_and_missing_folders(paired, capsys):
    assert main(["hevc", "check", "--pixel", str(paired / "pixel"), "--hevc", str(paired / "hevc")]) == 0
    assert "OK: 3 pairs" in capsys.readouterr().out
    assert main(["hevc", "check", "--pixel", str(paired / "nope"), "--hevc", str(paired / "hevc")]) == 2
    assert "does not exist" in capsys.readouterr().err
