import argparse
from pathlib import Path

import pytest
import torch
from compressor.models import create_model, list_models

from compressor.checkpoint import arch_from_repdistiller_path, load_checkpoint
from compressor.cli import main
from compressor.errors import UserError

CIFAR = list_models("cifar")


def logits_of(model, seed=0):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def repdistiller_file(root: Path, arch: str, num_classes: int = 100, name: str = "ckpt_epoch_240.pth"):
    torch.manual_seed(1)
    model = create_model(arch, num_classes=num_classes)
    # move BN statistics away from their init so that a wrong mapping would show in the logits
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = root / "save" / "models" / f"{arch}_vanilla" / name
    path.parent.mkdir(parents=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor(71.5), "optimizer": opt.state_dict()}, path)
    return path, model


@pytest.mark.parametrize("arch", CIFAR)
def test_every_cifar_arch_loads_from_repdistiller_layout(tmp_path, arch):
    path, model = repdistiller_file(tmp_path, arch)
    loaded = load_checkpoint(path)  # arch from the folder name, classes from the fc weight
    assert loaded.arch == arch and loaded.num_classes == 100
    assert loaded.layout == "repdistiller"
    assert loaded.meta["epoch"] == 240 and loaded.meta["accuracy"] == pytest.approx(71.5)
    torch.testing.assert_close(logits_of(loaded.model), logits_of(model), rtol=0, atol=0)


def make_layouts(model):
    sd = model.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    return {
        "state_dict": {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3},
        "network": {"network": sd},
        "raw": sd,
        "ddp": prefixed,
        "mmrazor": {"state_dict": {f"architecture.{k}": v for k, v in sd.items()}},
        "best": {"epoch": 10, "model": prefixed, "best_acc": 70.0, "optimizer": {}},
    }


@pytest.mark.parametrize("layout", ["state_dict", "network", "raw", "ddp", "mmrazor", "best"])
def test_layouts_load_with_identical_logits(tmp_path, layout):
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10)
    path = tmp_path / f"{layout}.pt"
    torch.save(make_layouts(model)[layout], path)
    loaded = load_checkpoint(path)  # no folder hint: the keys identify resnet8 uniquely
    assert loaded.arch == "resnet8" and loaded.num_classes == 10
    torch.testing.assert_close(logits_of(loaded.model), logits_of(model), rtol=0, atol=0)


def test_torchscript_archive(tmp_path):
    torch.manual_seed(0)
    model = create_model("wrn_16_1", num_classes=5).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 32, 32)).save(str(path))
    with pytest.raises(UserError, match="is a TorchScript archive: torch.jit.load runs the program.*--trust-checkpoint"):
        load_checkpoint(path, arch="wrn_16_1")  # a program is code, as a pickle is
    loaded = load_checkpoint(path, arch="wrn_16_1", trusted=True)
    assert loaded.layout == "torchscript"
    torch.testing.assert_close(logits_of(loaded.model), logits_of(model), rtol=0, atol=0)


def test_program_archives_are_not_opened_without_trust(tmp_path, monkeypatch):
    """TorchScript and torch.export archives are refused before torch opens them: opening one runs its program."""
    model = create_model("resnet8", num_classes=4).eval()
    scripted, program = tmp_path / "m.ts", tmp_path / "m.pt2"
    torch.jit.trace(model, torch.zeros(1, 3, 32, 32)).save(str(scripted))
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 32, 32),)), str(program))

    def opened(*args, **kwargs):
        raise AssertionError("the archive was opened")

    monkeypatch.setattr(torch.jit, "load", opened)
    monkeypatch.setattr(torch.export, "load", opened)
    for path, kind in ((scripted, "TorchScript"), (program, "torch.export")):
        with pytest.raises(UserError, match=f"is a {kind} archive.*not loaded.*--trust-checkpoint"):
            load_checkpoint(path, arch="resnet8")


def test_old_checkpoints_without_batch_counters(tmp_path):
    model = create_model("resnet8", num_classes=10)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    assert load_checkpoint(tmp_path / "old.pth", arch="resnet8").num_classes == 10


def test_arch_from_folder_names():
    assert arch_from_repdistiller_path("save/models/resnet32x4_vanilla/ckpt_epoch_240.pth") == "resnet32x4"
    assert arch_from_repdistiller_path("save/models/wrn_40_2_vanilla/wrn_40_2_best.pth") == "wrn_40_2"
    student = "save/student_model/S:resnet8x4_T:resnet32x4_cifar100_kd_r:0.1_a:0.9_b:0.0_1/resnet8x4_best.pth"
    assert arch_from_repdistiller_path(student) == "resnet8x4"
    assert arch_from_repdistiller_path("some/where/file.pth") is None


# --- bad input: each case through the API (message) and the CLI (exit code 2) ------------------


def last_pth(tmp_path):
    """RepDistiller's *_last.pth: the argparse Namespace of the run is pickled beside the weights."""
    model = create_model("resnet8", num_classes=100)
    path = tmp_path / "resnet8_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet8", dataset="cifar100"), "model": model.state_dict(), "optimizer": {}}, path)
    return path, model


def truncated(tmp_path):
    path, _ = repdistiller_file(tmp_path, "resnet8")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def wrong_arch(tmp_path):
    path = tmp_path / "r20.pth"
    torch.save(create_model("resnet20", num_classes=100).state_dict(), path)
    return path


BAD_CASES = {
    "missing": (lambda t: [str(t / "nope.pth")], "does not exist"),
    "truncated": (lambda t: [str(truncated(t))], "truncated, corrupt or not a PyTorch file"),
    "garbage": (lambda t: [str(_write(t / "junk.pth", b"not a checkpoint at all"))], "could not be read"),
    "wrong_arch": (lambda t: [str(wrong_arch(t)), "--arch", "resnet32"], "do match zoo architecture resnet20"),
    "wrong_classes": (lambda t: [str(wrong_arch(t)), "--num-classes", "10"], "trained for 100 classes but 10"),
    "needs_opt_in": (lambda t: [str(last_pth(t)[0])], "--trust-checkpoint"),
    "unknown_arch": (lambda t: [str(wrong_arch(t)), "--arch", "resnet21"], "unknown model 'resnet21'"),
    "no_state_dict": (lambda t: [str(_save(t / "d.pth", {"foo": 1}))], "none of them holds a state_dict"),
}


def _write(path, data):
    path.write_bytes(data)
    return path


def _save(path, obj):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_checkpoints_exit_2_with_a_clear_message(tmp_path, capsys, case):
    make_args, message = BAD_CASES[case]
    args = make_args(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["inspect", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


def test_opt_in_loads_trusted_legacy_pickle(tmp_path):
    path, model = last_pth(tmp_path)
    with pytest.raises(UserError, match="argparse.Namespace"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, trusted=True)
    assert loaded.arch == "resnet8" and loaded.meta["arch"] == "resnet8"
    torch.testing.assert_close(logits_of(loaded.model), logits_of(model), rtol=0, atol=0)


def test_sparse_tensors_load_as_dense_and_equal(tmp_path):
    """A state dict saved with sparse weights is valid input: it loads, densified, to the same model."""
    state = create_model("resnet8", num_classes=4).state_dict()
    torch.save({k: v.to_sparse() if v.dim() >= 2 else v for k, v in state.items()}, tmp_path / "sparse.pth")
    loaded = load_checkpoint(tmp_path / "sparse.pth", arch="resnet8", num_classes=4).model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
