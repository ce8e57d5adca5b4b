"""The papers' own schemes: DML and ONE losses against their equations, and every scheme's
student reloading and exporting like any other."""

import json

import numpy as np
import pytest
import torch
import yaml
from compressor.deploy.artifact import load_artifact
from compressor.deploy.export.onnx_export import export_onnx
from compressor.models import create_model

from compressor.cli import main
from compressor.losses import LOSSES, online_method
from compressor.losses.online import ensemble_logits
from compressor.train.cohorts import ONENetwork


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kl(p, q):
    return float((p * (np.log(p) - np.log(q))).sum(1).mean())


def ce(z, y):
    return float(-np.log(softmax(z)[np.arange(len(y)), y]).mean())


def test_dml_loss_against_its_equation():
    g = np.random.default_rng(0)
    zs = [g.normal(size=(6, 4)) for _ in range(3)]
    y = np.array([0, 1, 2, 3, 0, 1])
    parts = LOSSES.get("dml")(num_peers=3).network_loss([torch.as_tensor(z) for z in zs], torch.as_tensor(y))
    expected = 0.0
    for k, z in enumerate(zs):
        mimic = np.mean([kl(softmax(zs[j]), softmax(z)) for j in range(3) if j != k])
        assert float(parts[f"kl{k + 1}"]) == pytest.approx(mimic, rel=1e-10)
        expected += ce(z, y) + mimic
    assert float(parts["loss"]) == pytest.approx(expected, rel=1e-10)
    # identical peers: only cross-entropy remains
    same = LOSSES.get("dml")().network_loss([torch.as_tensor(zs[0])] * 2, torch.as_tensor(y))
    assert float(same["loss"]) == pytest.approx(2 * ce(zs[0], y), rel=1e-10)


def test_one_loss_against_its_equation():
    g = np.random.default_rng(1)
    zs = [g.normal(size=(5, 4)) for _ in range(3)]
    gate = softmax(g.normal(size=(5, 3)))
    y = np.array([0, 1, 2, 3, 0])
    ze = sum(gate[:, i : i + 1] * z for i, z in enumerate(zs))
    T = 3.0
    cross = ce(ze, y) + sum(ce(z, y) for z in zs)
    mimic = sum(T**2 * kl(softmax(ze / T), softmax(z / T)) for z in zs)
    inputs = ([torch.as_tensor(z) for z in zs], torch.as_tensor(gate))
    plain = LOSSES.get("one")(branches=3, T=T, rampup=0)  # the paper's equation, no ramp
    assert float(plain.network_loss(inputs, torch.as_tensor(y))["loss"]) == pytest.approx(cross + mimic, rel=1e-10)

    def authors_sigmoid_rampup(current, rampup_length):  # ONE_NeurIPS2018 / mean-teacher ramps.py, transcribed
        if rampup_length == 0:
            return 1.0
        current = np.clip(current, 0.0, rampup_length)
        phase = 1.0 - current / rampup_length
        return float(np.exp(-5.0 * phase * phase))

    ramped = LOSSES.get("one")(branches=3, T=T)  # default: their 80-epoch ramp of the KL term
    for epoch in (0, 1, 40, 79, 80, 200):
        ramped.set_epoch(epoch)
        expected = cross + authors_sigmoid_rampup(epoch, 80) * mimic
        assert float(ramped.network_loss(inputs, torch.as_tensor(y))["loss"]) == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(ensemble_logits([torch.as_tensor(z) for z in zs], torch.as_tensor(gate)), torch.as_tensor(ze))


def test_one_network_branch_one_is_the_student():
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=4).eval()
    net = ONENetwork(student, 3)
    net.build_gate(torch.zeros(2, 3, 32, 32))
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, gate = net(x)
        torch.testing.assert_close(logits[0], student(x))
        assert not torch.allclose(logits[1], logits[0])  # other branches have their own weights
    torch.testing.assert_close(gate.sum(1), torch.ones(2))
    members = net.members()
    assert set(members) == {"branch1", "branch2", "branch3", "ensemble"}
    assert sum(p.numel() for p in net.parameters()) < 3 * sum(p.numel() for p in student.parameters())  # the trunk is shared
    with pytest.raises(ValueError, match="ONE branches the last stage of a ResNet"):
        ONENetwork(create_model("vgg8", num_classes=4), 2)


def test_online_methods_stand_alone():
    assert online_method("dml") == "dml" and online_method("at+kd") is None
    with pytest.raises(ValueError, match="cannot be combined"):
        online_method("dml+kd")


DATA = "synthetic:classes=4,train=128,test=64"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert main(["distill", "--student", "resnet14", "--data", DATA, "--method", "ce", "--epochs", "2", "--batch-size", "32",
                 "--lr", "0.1", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    return out / "student.pt"


SCHEMES = {
    "ekd": {"loss": {"method": "ekd", "gamma": 0.9, "weights": {"ekd": 0.1}}, "train": {"epochs": 1, "init_epochs": 1}},
    "averager": {"loss": {"method": "averager", "params": {"averager": {"base": "dkd", "warmup": 1}}}, "train": {"epochs": 1}},
    "averager-ens": {"loss": {"method": "averager", "params": {"averager": {"exits": True}}}, "train": {"epochs": 1}},
    "dml": {"loss": {"method": "dml", "params": {"dml": {"peers": ["resnet8", "resnet14"]}}}, "train": {"epochs": 1}},
    "one": {"loss": {"method": "one", "params": {"one": {"branches": 2}}}, "train": {"epochs": 1}},
    "letkd": {"loss": {"method": "letkd+kd", "params": {"letkd": {"variant": 2, "templates": 6, "subclasses": 2, "samples": 64}}},
              "student": {"arch": "resnet20"}, "train": {"epochs": 1}},
    "bss": {"loss": {"method": "bss+kd", "params": {"bss": {"ratio": 0.5, "steps": 3}}}, "train": {"epochs": 2}},
    "letkd-kernels": {"loss": {"method": "letkd", "params": {"letkd": {"supervision": "kernels", "samples": 32}}}, "train": {"epochs": 1}},
}  # fmt: skip


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_scheme_student_reloads_and_exports(tmp_path, teacher, scheme):
    config = {"teacher": {"checkpoint": str(teacher), "arch": "resnet14"}, "student": {"arch": "resnet8"},
              "data": {"train": DATA, "batch_size": 32}, "out": "run", **SCHEMES[scheme]}  # fmt: skip
    student_arch = config["student"]["arch"]
    if scheme in ("dml", "one"):
        del config["teacher"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["distill", "--config", str(tmp_path / "c.yaml"), "--quiet"]) == 0
    art = load_artifact(tmp_path / "run" / "student.pt")
    assert art.arch == student_arch and art.num_classes == 4
    assert export_onnx(art.model, tmp_path / "s.onnx", (32, 32)).ok
    sidecar = json.loads((tmp_path / "run" / "student.json").read_text())
    assert sidecar["made_by"]["method"] == config["loss"]["method"]
    if scheme == "ekd":  # the heads are saved with their accuracy, and reusable without the init stage
        heads = torch.load(tmp_path / "run" / "ekd_heads.pt", weights_only=True)
        assert len(heads["report"]["head_top1"]) == 3 and "teacher_top1" in heads["report"]  # one head per stage
        assert sidecar["made_by"]["capacity_ratio"] == pytest.approx(
            sum(p.numel() for p in create_model("resnet14", 4).parameters()) / sum(p.numel() for p in art.model.parameters()), rel=1e-3
        )
        again = {**config, "loss": {**config["loss"], "params": {"ekd": {"heads": str(tmp_path / "run" / "ekd_heads.pt")}}},
                 "train": {"epochs": 1}, "out": "again"}  # fmt: skip
        (tmp_path / "again.yaml").write_text(yaml.safe_dump(again))
        assert main(["distill", "--config", str(tmp_path / "again.yaml"), "--quiet"]) == 0
    if scheme.startswith("letkd"):  # the KD layers are part of the student: saved, rebuilt, exported
        options = sidecar["model_options"]["letkd"]
        assert len(art.model.kd_layers) == (2 if scheme == "letkd" else 1) == len(options["points"])
        proto = __import__("onnx").load(str(tmp_path / "s.onnx"))
        assert len([n for n in proto.graph.node if n.op_type == "Conv"]) > len(
            [m for m in create_model(student_arch, 4).modules() if isinstance(m, torch.nn.Conv2d)]
        )
    if scheme == "averager-ens":  # exits on resnet8's first two stages; the student itself stays single-exit
        exits = torch.load(tmp_path / "run" / "averager_exits.pt", weights_only=True)
        assert exits["exit_points"] == [1, 2] and len(exits["report"]["exit_top1"]) == 2
        assert 0 <= exits["report"]["ensemble_top1"] <= 100 and exits["report"]["student_top1"] == pytest.approx(
            sidecar["metrics"]["final"]["top1"], abs=0.01
        )
        assert not any(k.startswith("exits") for k in torch.load(tmp_path / "run" / "student.pt", weights_only=True))
    if scheme == "bss":  # the boundary term is trained and decays to 0 over the run
        rows = [json.loads(r)["train"] for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert rows[0]["bss"] > 0 and rows[1]["bss"] < rows[0]["bss"] * 0.75
    if scheme == "dml":  # the second peer is a student of its own architecture
        assert load_artifact(tmp_path / "run" / "student_peer2.pt").arch == "resnet14"
    if scheme in ("dml", "one"):
        members = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["members"]
        assert len(members) == (2 if scheme == "dml" else 3)


def test_undermining_makes_a_teacher_and_the_averager_distils_from_it(tmp_path, teacher):
    nasty = tmp_path / "nasty"
    assert main(["distill", "--teacher", str(teacher), "--arch", "resnet14", "--student", "resnet14", "--method", "undermine",
                 "--data", DATA, "--epochs", "1", "--out", str(nasty), "--quiet"]) == 0  # fmt: skip
    rows = [json.loads(r) for r in (nasty / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train"]["undermine"] < 0  # the KL to the normal network is being maximised
    assert main(["distill", "--teacher", str(nasty / "student.pt"), "--arch", "resnet14", "--student", "resnet8", "--method", "averager",
                 "--data", DATA, "--epochs", "1", "--out", str(tmp_path / "avg"), "--quiet",
                 "--set", f"teacher.ensemble=[{teacher}]"]) == 0  # fmt: skip
    assert (tmp_path / "avg" / "student.pt").exists()


def test_example_configs_validate():
    from pathlib import Path

    from compressor.losses import parse_method
    from compressor.train import load_distill_config

    examples = sorted((Path(__file__).parents[2] / "compressor" / "train" / "examples").glob("*.yaml"))
    assert {p.stem for p in examples} >= {"ekd", "averager", "undermine", "letkd", "dml", "one", "bss"}
    for path in examples:
        config = load_distill_config(path)
        assert parse_method(config.loss.method), path


def test_ekd_from_flags_alone_with_a_student_of_other_depth(tmp_path):
    """Tables 5.2/5.3 pair teachers of 4-5 stages with 3-stage students: EKD reads no student hint,
    and its heads' initialisation stage gets a default length when none is given."""
    import yaml

    teacher = tmp_path / "vgg8.pth"
    torch.save(create_model("vgg8", num_classes=4).state_dict(), teacher)
    out = tmp_path / "run"
    args = ["--teacher", str(teacher), "--student", "resnet8", "--method", "ekd", "--data", "synthetic:classes=4,train=64,test=32"]
    assert main(["distill", *args, "--epochs", "2", "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["init_epochs"] == 1
    heads = torch.load(out / "ekd_heads.pt", weights_only=True)
    assert len(heads["head_points"]) == 5  # one per stage of the VGG teacher, the last included


def test_methods_leave_the_users_networks_without_hooks(tmp_path, teacher):
    """letKD's kernel supervision hooks the teacher's last 3x3 conv and the averager's exits hook the
    student during the run; both are removed when it ends (the networks are the user's objects)."""
    from compressor.train import distill, load_distill_config

    for method, params, name in (
        ("letkd", {"letkd": {"supervision": "kernels", "samples": 32}}, "k"),
        ("averager", {"averager": {"exits": True}}, "a"),
    ):
        t = create_model("resnet14", 4)
        t.load_state_dict(torch.load(teacher, weights_only=True))
        s = create_model("resnet8", 4)
        flags = {"student.arch": "resnet8", "loss.method": method, "loss.params": params, "data.train": DATA, "train.epochs": 1,
                 "data.batch_size": 32, "out": str(tmp_path / name)}  # fmt: skip
        distill(load_distill_config(None, flags), progress=False, teacher=t, student=s)
        hooked = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in s.modules())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in t.modules()), method
        assert hooked == len(getattr(s, "kd_layers", [])), method  # only letKD's own layers, part of the student by design
