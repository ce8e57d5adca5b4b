import struct

import cv2
import numpy as np
import pytest

from compressor.cli import main
from compressor.errors import UserError
from compressor.hevc import (
    AnalysisFormatError,
    ConvertOptions,
    EncoderSettings,
    IntraAnalysis,
    convert_folder,
    find_encoder,
    hevc_image,
    parse_intra_analysis,
    partition_image,
    prediction_image,
)
from compressor.hevc.analysis import FRAME, HEADER, zscan_to_raster
from compressor.hevc.convert import to_i420
from compressor.hevc.encoder import _candidates


def test_zscan_order():
    # 4x4 grid: z-order visits quadrants TL, TR, BL, BR, recursively
    expected = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    assert zscan_to_raster(4).tolist() == expected
    assert sorted(zscan_to_raster(16).tolist()) == list(range(256))


def test_test_image_rendering_formulas():
    modes = np.array([[0, 1], [17, 34]], np.uint8)
    a = IntraAnalysis(8, 6, 64, modes, np.array([[0, 1], [2, 3]], np.uint8), np.array([[0, 0], [0, 3]], np.uint8))
    img = prediction_image(a)
    assert img.shape == (6, 8)
    assert img[0, 0] == 0 and img[0, 4] == round(255 / 34) and img[4, 0] == 128 and img[4, 4] == 255  # round(255*17/34)=127.5->128
    assert (img[:4, :4] == 0).all()  # one flat block per 4x4 unit
    part = partition_image(a, {64: 10, 32: 20, 16: 30, 4: 50})
    assert part[0, 0] == 10 and part[0, 4] == 20 and part[4, 0] == 30 and part[4, 4] == 50  # depth 3 NxN -> 4x4 PUs
    with pytest.raises(ValueError, match="no grey level configured for coding-block size"):
        partition_image(a, {64: 10})


def synthetic_file(ctu_depths=(0, 0), modes_value=5, cutree=0, reuse=10, width=128, height=64) -> bytes:
    """An analysis file written by hand in x265's layout: two 64x64 CTUs, one CU each."""
    header = [0] * 20
    header[15:20] = [reuse, cutree, width, height, 64]
    depths = bytes(ctu_depths)
    n = len(depths)
    body = depths + bytes([36] * n) + bytes([0] * n) + (bytes(n) if cutree else b"") + bytes([modes_value]) * (2 * 256)
    frame = FRAME.pack(FRAME.size + len(body), n, 0, 1, 0, 0, 2, 256)
    return HEADER.pack(*header) + frame + body


def test_hand_written_layout_parses():
    a = parse_intra_analysis(synthetic_file())
    assert a.modes.shape == (16, 32) and (a.modes == 5).all() and (a.block_size == 64).all()
    assert parse_intra_analysis(synthetic_file(cutree=1)).modes.shape == (16, 32)


@pytest.mark.parametrize(
    "data, message",
    [
        (synthetic_file()[:50], "ends inside the 80-byte header"),
        (synthetic_file(reuse=5), "reuse level is 5"),
        (synthetic_file()[:-10], "ends inside the frame record"),
        (synthetic_file() + b"\0", "trailing bytes"),
        (synthetic_file(modes_value=40), "outside 0..34"),
        (synthetic_file(ctu_depths=(0, 1)), "CU entries run out"),
        (synthetic_file(width=256), "expected 4 for a 256x64 picture"),
    ],
)
def test_unknown_layouts_are_refused(data, message):
    with pytest.raises(AnalysisFormatError, match=message):
        parse_intra_analysis(data)


def test_record_size_mismatch_is_refused():
    data = bytearray(synthetic_file())
    struct.pack_into("<I", data, HEADER.size, 999)
    with pytest.raises(AnalysisFormatError, match="record size 999"):
        parse_intra_analysis(bytes(data))


def made_image(seed=0, h=96, w=128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    cv2.rectangle(img, (10, 20), (60, 40), (255, 255, 255), -1)
    cv2.putText(img, "AB12", (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.circle(img, (90, 60), 20, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return img


ENCODERS = [kind for kind, _ in _candidates("auto")]


@pytest.fixture(scope="module")
def encoder():
    if not ENCODERS:
        pytest.skip("no HEVC encoder: neither x265 nor imageio-ffmpeg is installed")
    return find_encoder()


def test_real_encoder_modes_are_valid_and_deterministic(encoder):
    img = made_image()
    yuv, w, h = to_i420(img, 8)
    raw = encoder.encode(yuv, w, h, EncoderSettings())
    a = parse_intra_analysis(raw)
    assert (a.width, a.height, a.ctu) == (128, 96, 64)
    assert a.modes.shape == (24, 32) and a.modes.max() <= 34
    assert len(np.unique(a.modes)) > 3  # the picture's structure shows in the modes
    assert set(np.unique(a.block_size).tolist()) <= {4, 8, 16, 32, 64}
    assert encoder.encode(yuv, w, h, EncoderSettings()) == raw  # identical on re-run
    grey = hevc_image(img, encoder, ConvertOptions())
    assert grey.shape == (96, 128) and grey.dtype == np.uint8
    # An odd-sized image is padded for the encoder and cropped back
    assert hevc_image(img[:90, :125], encoder, ConvertOptions()).shape == (90, 125)


@pytest.mark.skipif(len(ENCODERS) < 2, reason="needs both the x265 binary and imageio-ffmpeg's ffmpeg")
def test_both_encoders_agree():
    img = made_image(1)
    images = [hevc_image(img, find_encoder(kind), ConvertOptions()) for kind in ("x265", "ffmpeg")]
    assert np.array_equal(*images)


def test_unverified_encoder_version_is_refused(monkeypatch):
    if not ENCODERS:
        pytest.skip("no HEVC encoder installed")
    monkeypatch.setattr("compressor.hevc.encoder._probe_version", lambda kind, path: "9.9+1-abc")
    with pytest.raises(UserError, match="verified only for x265 3.5, 4.3"):
        find_encoder()
    assert find_encoder(allow_unverified=True).release == "9.9"


def write_images(root, count=3):
    for i in range(count):
        path = root / ("a" if i % 2 else "b") / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), made_image(i))


def test_convert_folder_manifest_resume_and_refusals(tmp_path, encoder):
    write_images(tmp_path / "src")
    manifest = convert_folder(tmp_path / "src", tmp_path / "dst", encoder, ConvertOptions(jobs=2), progress=False)
    assert sorted(manifest["images"]) == ["a/001.png", "b/000.png", "b/002.png"]
    assert manifest["settings"]["qp"] == 32 and manifest["settings"]["encoder_version"] == encoder.version
    assert manifest["images"]["a/001.png"]["preset"] == "medium"
    out = tmp_path / "dst" / "a" / "001.png"
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (96, 128)
    stamp = out.stat().st_mtime_ns
    convert_folder(tmp_path / "src", tmp_path / "dst", encoder, ConvertOptions(), progress=False)
    assert out.stat().st_mtime_ns == stamp  # done images are skipped
    with pytest.raises(UserError, match="made with other settings"):
        convert_folder(tmp_path / "src", tmp_path / "dst", encoder, ConvertOptions(settings=EncoderSettings(qp=22)), progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        convert_folder(tmp_path / "src", tmp_path / "other", encoder, ConvertOptions(), progress=False)
    (tmp_path / "src" / "b" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="could not be decoded"):
        convert_folder(tmp_path / "src", tmp_path / "dst", encoder, ConvertOptions(), progress=False)


def test_cli_convert_and_errors(tmp_path, encoder, capsys):
    write_images(tmp_path / "src", 2)
    assert main(["hevc", "convert", str(tmp_path / "src"), str(tmp_path / "dst"), "--variant", "partition", "--qp", "27"]) == 0
    assert "2 HEVC partition images" in capsys.readouterr().out
    assert main(["hevc", "convert", str(tmp_path / "missing"), str(tmp_path / "d2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["hevc", "convert", str(tmp_path / "src"), str(tmp_path / "d3"), "--qp", "60"]) == 2
    assert "outside HEVC's 0..51" in capsys.readouterr().err
    assert main(["hevc", "convert", str(tmp_path / "src"), str(tmp_path / "d4"), "--variant", "nope"]) == 2
    assert main(["hevc", "convert", str(tmp_path / "src"), str(tmp_path / "d5"), "--levels", "64=x"]) == 2
    assert main(["hevc", "convert", str(tmp_path / "src"), str(tmp_path / "d6"), "--variant", "partition", "--levels", "64=0,32=9"]) == 2
    assert "no grey level for block sizes [4, 8, 16]" in capsys.readouterr().err
    assert not (tmp_path / "d3").exists() and not (tmp_path / "d4").exists()
