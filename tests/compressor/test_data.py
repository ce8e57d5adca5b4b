import pickle

import cv2
import numpy as np
import pytest
import torch

from compressor.data import open_dataset, parse_spec
from compressor.errors import UserError


def write_cifar10(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return folder


def write_cifar100(root, n=12):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"fine_labels": list(rng.integers(0, 100, n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}))
    return folder


def test_cifar10_layout(tmp_path):
    folder = write_cifar10(tmp_path)
    for spec in (f"cifar10:{tmp_path}", f"cifar10:{folder}"):
        train = open_dataset(spec, "train")
        assert len(train) == 100 and train.info.num_classes == 10 and train.info.class_names[3] == "c3"
        image, label, index = train[7]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and index == 7
    raw = pickle.loads((folder / "data_batch_1").read_bytes())
    expected = raw[b"data"][0].reshape(3, 32, 32)
    assert torch.equal(open_dataset(f"cifar10:{folder}").raw(0)[0], torch.from_numpy(expected))
    assert len(open_dataset(f"cifar10:{folder}", "test")) == 20


def test_cifar100_layout(tmp_path):
    write_cifar100(tmp_path)
    d = open_dataset(f"cifar100:{tmp_path}")
    assert d.info.num_classes == 100 and len(d) == 12 and d.labels().max() < 100


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        open_dataset(f"cifar10:{folder}")


def test_cifar_missing_files(tmp_path):
    with pytest.raises(UserError, match="not a CIFAR python-pickle folder"):
        open_dataset(f"cifar100:{tmp_path}")


def write_imagefolder(root, classes=("cat", "dog"), per_class=3, size=(20, 24)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / c / f"{i}.png"), rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))
    return root


def test_imagefolder(tmp_path):
    write_imagefolder(tmp_path)
    d = open_dataset(f"imagefolder:{tmp_path}:size=16")
    assert d.info.class_names == ("cat", "dog") and len(d) == 6 - 2 and list(d.labels()) == [0, 0, 1, 1]
    assert d[3][0].shape == (3, 16, 16)


def test_imagefolder_without_splits_holds_out_a_test_split(tmp_path):
    write_imagefolder(tmp_path, per_class=7)
    train, test = open_dataset(f"imagefolder:{tmp_path}:size=8", "train"), open_dataset(f"imagefolder:{tmp_path}:size=8", "test")
    train_files, test_files = {p for p, _ in train.samples}, {p for p, _ in test.samples}
    assert not train_files & test_files and len(train_files | test_files) == 14
    assert sorted(p.name for p in test_files) == ["0.png", "0.png", "5.png", "5.png"]  # 1 in 5 per class, from the first
    assert "held out" in train.info.name
    same = open_dataset(f"imagefolder:{tmp_path}:size=8,holdout=0", "test")
    assert len(same) == 14
    with pytest.raises(UserError, match="fewer than 2 images"):
        write_imagefolder(tmp_path / "lonely", classes=("a", "b"), per_class=1)
        open_dataset(f"imagefolder:{tmp_path / 'lonely'}")


def test_imagefolder_splits(tmp_path):
    write_imagefolder(tmp_path / "train", per_class=2)
    write_imagefolder(tmp_path / "val", per_class=1)
    assert len(open_dataset(f"imagefolder:{tmp_path}:size=8", "train")) == 4
    assert len(open_dataset(f"imagefolder:{tmp_path}:size=8", "test")) == 2


def test_corrupt_image_names_the_file(tmp_path):
    write_imagefolder(tmp_path)
    (tmp_path / "dog" / "1.png").write_bytes(b"\x89PNG broken")
    d = open_dataset(f"imagefolder:{tmp_path}:size=8")
    with pytest.raises(UserError, match=r"dog/1.png could not be decoded"):
        d[2]


def test_empty_imagefolder(tmp_path):
    (tmp_path / "cat").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        open_dataset(f"imagefolder:{tmp_path}")


def test_synthetic_is_deterministic_and_balanced():
    a, b = open_dataset("synthetic:classes=4,train=400"), open_dataset("synthetic:classes=4,train=400")
    assert torch.equal(a[5][0], b[5][0]) and a.info.num_classes == 4
    assert np.bincount(a.labels(), minlength=4).min() > 60
    test = open_dataset("synthetic:classes=4,test=50", "test")
    assert len(test) == 50 and not torch.equal(test.raw(0)[0], a.raw(0)[0])


@pytest.mark.parametrize(
    "spec,message",
    [
        ("mnist:/x", "unknown dataset 'mnist'"),
        ("cifar10", "needs a path"),
        ("synthetic:classes=x", "bad dataset option"),
        ("synthetic:colour=3", "bad dataset option"),
        ("synthetic:classes=1", "bad options"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(UserError, match=message):
        open_dataset(spec)


def test_parse_spec():
    assert parse_spec("synthetic") == ("synthetic", "", {})
    assert parse_spec("cifar100:/data/c100") == ("cifar100", "/data/c100", {})
    assert parse_spec("imagefolder:/d:size=96") == ("imagefolder", "/d", {"size": 96})


def test_digits_real_data():
    train, test = open_dataset("digits", "train"), open_dataset("digits:size=16", "test")
    assert len(train) + len(open_dataset("digits", "test")) == 1797 and train.info.num_classes == 10
    assert train[0][0].shape == (3, 32, 32) and test[0][0].shape == (3, 16, 16)
    counts = np.bincount(train.labels(), minlength=10)
    assert counts.max() - counts.min() <= 8  # stratified: every class keeps ~80% of its ~180 images


def test_imagenet_protocol_for_image_folders(tmp_path):
    """RandomResizedCrop + flip for training and resize-256/centre-crop-224 for evaluation, on the decoded image."""
    from compressor.data.augment import PadCropFlip, RandomResizedCropFlip, resize_center_crop

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        (root / "val" / c).mkdir(parents=True)
        gradient = np.tile(np.arange(120, dtype=np.uint8)[None, :, None], (60, 1, 3))  # 60 x 120, brightness grows to the right
        cv2.imwrite(str(root / "train" / c / "0.png"), gradient)
        cv2.imwrite(str(root / "val" / c / "0.png"), gradient)
    train = open_dataset(f"imagefolder:{root}:size=32", "train")
    test = open_dataset(f"imagefolder:{root}:size=32", "test")
    assert isinstance(train.augmentation(), RandomResizedCropFlip)
    # evaluation: shorter side 60 -> round(32 * 256 / 224) = 37, so 74 wide; the centre 32 x 32 keeps the middle columns
    image, _ = test.raw(0)
    assert image.shape == (3, 32, 32)
    expected = resize_center_crop(test.original(0), (32, 32))
    assert torch.equal(image, expected) and 40 < float(image.float().mean()) < 80  # the middle of the 0..119 ramp
    # training: a random box of 8-100 % of the area, aspect within 3/4..4/3, resized to 32 x 32
    aug = RandomResizedCropFlip((32, 32))
    torch.manual_seed(0)
    for _ in range(200):
        top, left, h, w = aug.box(60, 120)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 120
        assert 0.08 * 7200 * 0.95 <= h * w <= 7200 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    train.transform = train.augmentation()
    x, label, index = train[0]
    assert x.shape == (3, 32, 32) and label == 0 and index == 0
    squashed = open_dataset(f"imagefolder:{root}:size=32,squash=1", "train")
    assert isinstance(squashed.augmentation(), PadCropFlip) and squashed.raw(0)[0].shape == (3, 32, 32)
