"""The whole-run report: sections, images, Markdown, the CLI, and rendering in a real browser."""

import html
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from compressor import api
from compressor.cli import main
from compressor.report import SECTIONS

TINY = {
    "name": "tiny",
    "out": "runs",
    "seeds": [0, 1],  # the student twice: mean ± std in the summary
    "data": {"train": "synthetic:classes=4,train=96,test=48"},
    "teacher": {"arch": "resnet14", "recipe": {"epochs": 2, "batch_size": 32}},
    "hints": {"samples": 48, "k": 3},
    "distill": {"student": "resnet8", "recipe": {"epochs": 2, "batch_size": 32}, "loss": {"method": "at+kd"}},
    # the sweep, a fallback and a layer the user keeps float, in the report
    "export": {"calib_samples": 32, "sensitivity": True, "int8_budget": 100.0, "int8_float": ["/conv1/Conv"]},
    "profile": {
        "backends": ["torch", "ort-cpu", "ort-cpu-int8"],
        "batches": [1],
        "eval_samples": 32,
        "iters": 3,
        "e2e": True,
        "memory_worker": False,
    },  # the fresh-process memory worker has its own test in test_profile.py
}
# Inserted before </body> of a copy: records, once the page has loaded, which sections exist and whether every image decoded.
PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth}));
  const sections = [...document.querySelectorAll('section')].map(s => ({id: s.id, title: s.querySelector('h2').textContent}));
  document.body.setAttribute('data-probe', JSON.stringify({images, sections}));
});</script>"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    config = root / "p.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(config), "--quiet"]) == 0
    return root / "runs" / "tiny"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: .ci/run installs Debian's chromium")
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    return found


def test_run_report_renders_in_chromium(run_dir, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text((run_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run([chromium(), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    probe = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    assert [s["id"] for s in probe["sections"]] == list(SECTIONS)
    assert [s["title"] for s in probe["sections"]] == list(SECTIONS.values())
    alts = [i["alt"] for i in probe["images"]]
    for expected in ("Similarity between the teacher's candidate points", "Training curves", "Latency distributions", "Throughput",
                     "INT8 sensitivity per layer"):  # fmt: skip
        assert expected in alts
    assert all(i["ok"] and i["width"] > 100 for i in probe["images"]), probe["images"]


def test_report_tells_the_run_from_teacher_to_deployed_student(run_dir):
    text = (run_dir / "report.md").read_text()
    summary = text.split("## Summary")[1].split("## Teacher")[0]
    # a speed-up when the round medians agree, else said to be unreliable (iters: 3 on a shared machine may be either)
    claim = (
        r"resnet8 (student: [\d.]+x (faster|slower) than|vs) resnet14 on ONNX Runtime CPU \(batch 1\)(, |: latency unreliable "
        r"\(round medians spread .*, so no speed-up is claimed; )\d+% fewer parameters, top-1"
    )
    assert re.search(claim, summary)
    assert "INT8 (student.int8.onnx): top-1" in summary and re.search(r"resnet8 by at\+kd over 2 seeds: top-1 [\d.]+ ± [\d.]+", summary)
    seeds = json.loads((run_dir / "distill" / "seeds.json").read_text())
    assert [r["seed"] for r in seeds["runs"]] == [0, 1] and (run_dir / "distill" / "seeds" / "seed-1" / "student.pt").exists()
    assert "| mean ± std |" in text
    for title in SECTIONS.values():
        assert f"## {title}" in text
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # every image the Markdown shows is a file of the run
        assert (run_dir / link).read_bytes()[:4] == b"\x89PNG", link
    assert "| 1 | layer1.0 |" in text and "chosen" in text and "baseline" in text  # the hint plan, point by point
    assert "teacher: 2 epochs" in text and "student: 2 epochs" in text and "kd " in text  # loss terms by name
    assert "torch vs ONNX parity" in text and "End to end, image file to answer" in text
    assert (
        "INT8 sensitivity: the 10 most sensitive of 10 layers" in text and "Float fallback for a 100.0-point top-1 budget: 1 layers" in text
    )
    assert "ONNX Runtime CPU kernel time of the layers at batch 8" in text  # where INT8 pays, layer by layer
    assert "Kept float by --int8-float: /conv1/Conv." in text
    assert "```yaml" in text and "resnet14" in text.split("## Provenance")[1]  # the resolved config


def test_report_says_whether_distillation_helped_and_what_to_deploy(run_dir):
    text = (run_dir / "report.md").read_text()
    summary = text.split("## Summary")[1].split("## Teacher")[0]
    compare = json.loads((run_dir / "compare" / "compare.json").read_text())
    vanilla = compare["comparisons"]["vanilla"]
    # the same student alone, per seed, from the distilled student's initial weights (its seed's), not another draw
    assert vanilla["trained"] and vanilla["same_initial_weights"] and [r is not None for r in vanilla["runs"]] == [True, True]
    firsts = [json.loads((run_dir / f / "student.json").read_text())["made_by"] for f in ("distill", "compare/vanilla")]
    assert firsts[0]["init_digest"] == firsts[1]["init_digest"] and firsts[1]["teacher_arch"] is None
    distilled = [json.loads((run_dir / f / "student.json").read_text())["metrics"]["final"]["top1"]
                 for f in ("distill", "distill/seeds/seed-1")]  # fmt: skip
    alone = [json.loads((run_dir / f / "student.json").read_text())["metrics"]["final"]["top1"]
             for f in ("compare/vanilla", "compare/vanilla/seeds/seed-1")]  # fmt: skip
    mean = (distilled[0] - alone[0] + distilled[1] - alone[1]) / 2
    assert vanilla["distill_minus_this"]["mean"] == pytest.approx(mean)
    assert f"at+kd distillation: {mean:+.1f} top-1" in summary and "over the same student trained alone" in summary
    assert re.search(r"interval [+-][\d.]+ to [+-][\d.]+, 2 seeds", summary)
    plan = json.loads((run_dir / "hints" / "plan.json").read_text())
    hints = compare["comparisons"]["baseline-hints"]
    assert hints["trained"] == (plan["hints"] != plan["baseline_hints"])  # the stage ends chosen: that run is the distilled one
    assert ("for the chosen hints over the teacher's stage-end hints" in summary) == hints["trained"]
    assert ("| baseline-hints | resnet8 | at+kd |" in text) == hints["trained"] and "| vanilla | resnet8 | ce |" in text
    deploy = re.search(r"Recommendation: deploy (\S+) \(", summary)
    assert deploy and (run_dir / deploy.group(1)).is_file(), summary
    assert "Pareto set" in summary
    per_backend = summary.split("Per backend, by the same rule: ")[1].split("\n")[0]
    per = dict(re.findall(r"(PyTorch|ONNX Runtime CPU INT8|ONNX Runtime CPU): (\S+) \(", per_backend))
    assert per.keys() == {"PyTorch", "ONNX Runtime CPU", "ONNX Runtime CPU INT8"}, summary
    assert per["ONNX Runtime CPU INT8"].endswith(".int8.onnx") and per["PyTorch"].endswith(".pt")
    assert all((run_dir / f).is_file() for f in per.values())
    assert summary.index("over the same student trained alone") < summary.index("Recommendation") < summary.index("fewer parameters")


def test_report_command_regenerates_and_refuses_what_it_did_not_write(run_dir, tmp_path, capsys):
    before = (run_dir / "report.html").stat().st_mtime_ns
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").stat().st_mtime_ns >= before and "report:" in capsys.readouterr().out
    assert api.report(run_dir)["report.md"] == run_dir / "report.md"

    foreign = tmp_path / "foreign"
    shutil.copytree(run_dir / "hints", foreign / "hints")
    (foreign / "report.html").write_text("<p>my own notes</p>")
    assert main(["report", str(foreign)]) == 2
    assert "was not written by compressor report" in capsys.readouterr().err
    assert (foreign / "report.html").read_text() == "<p>my own notes</p>"
    assert main(["report", str(foreign), "--overwrite"]) == 0
    text = (foreign / "report.md").read_text()
    assert "No teacher in this run" not in text and "Not profiled in this run" in text and "Nothing exported" in text

    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
