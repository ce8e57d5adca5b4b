from pathlib import Path

import pytest
import yaml

from compressor.config import parse_overrides
from compressor.errors import UserError
from compressor.train import load_distill_config

EXAMPLE = Path(__file__).resolve().parents[2] / "compressor" / "train" / "distill.example.yaml"


def test_example_config_is_valid_and_resolves_paths():
    c = load_distill_config(EXAMPLE)
    assert c.student.arch == "resnet8x4" and c.loss.method == "at+kd" and c.loss.params["kd"] == {"T": 4}
    assert Path(c.teacher.checkpoint).is_absolute() and Path(c.teacher.checkpoint).parent.parent.parent.parent == EXAMPLE.parent
    assert c.train.amp == "off"


def test_flags_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"student": {"arch": "resnet8"}, "optim": {"lr": 0.1}}))
    c = load_distill_config(path, {"optim.lr": 0.2, "train.epochs": None}, ["optim.lr=0.3", "optim.milestones=[1, 2]"])
    assert c.optim.lr == 0.3 and c.optim.milestones == [1, 2] and c.train.epochs == 240


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c=x+y", "d=[1,2]", "e="]) == [("a.b", 1), ("c", "x+y"), ("d", [1, 2]), ("e", None)]
    with pytest.raises(UserError, match="key.sub=value"):
        parse_overrides(["novalue"])


def test_errors_name_key_value_and_allowed():
    with pytest.raises(UserError) as e:
        load_distill_config(None, {"student.arch": "resnet8"}, ["optim.name=adam", "train.amp=fp8", "data.batch_size=0"])
    text = str(e.value)
    assert "optim.name" in text and "'adam'" in text and "'sgd' or 'adamw'" in text
    assert "train.amp" in text and "data.batch_size" in text and "greater than or equal to 1" in text


def test_missing_and_non_mapping(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_distill_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_distill_config(tmp_path / "list.yaml")


def test_each_concern_has_one_section_that_the_configs_compose():
    """Hint selection, optimiser, data, export and profile are each defined once; the pipeline's and
    cross distillation's sections extend them and agree on every default they do not override on purpose."""
    from compressor.deploy.export import ExportOptions
    from compressor.deploy.profile.backends import ProfileOptions

    from compressor.crossdistill.config import HintSection, OptimSection
    from compressor.hints.select import HintConfig
    from compressor.pipeline.config import ExportSpec, HintsSpec, PipelineConfig, ProfileSpec, Recipe
    from compressor.train.config import DataConfig, DataSource, OptimConfig

    overridden = {ExportSpec: {"int8"}, ProfileSpec: {"e2e"}}  # the pipeline exports INT8 and takes e2e as a switch
    pairs = [(HintsSpec, HintConfig), (HintSection, HintConfig), (Recipe, OptimConfig), (OptimSection, OptimConfig),
             (ExportSpec, ExportOptions), (ProfileSpec, ProfileOptions), (DataConfig, DataSource)]  # fmt: skip
    for section, base in pairs:
        assert issubclass(section, base), section
        for name, field in base.model_fields.items():
            if name not in overridden.get(section, set()):
                assert section.model_fields[name].get_default(call_default_factory=True) == field.get_default(call_default_factory=True), (
                    section, name)  # fmt: skip
    assert PipelineConfig.model_fields["data"].annotation is DataSource
