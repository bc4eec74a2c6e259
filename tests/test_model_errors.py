"""Model-file mistakes: each is a UserError naming the file and the field."""

import pytest
import yaml

from neupims_py.errors import UserError
from neupims_py.model import load_model

GOOD = {
    "name": "bad", "layers": 32, "d_model": 4096, "heads": 32, "ffn_dim": 16384,
    "ffn_kind": "gelu", "norm": "layernorm", "rotary": False, "vocab": 50304,
    "dtype_bytes": 2, "tp": 4,
}


def error_of(tmp_path, overrides=(), **changes) -> str:
    data = {**GOOD, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as info:
        load_model(path, overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_the_good_file_loads(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    assert load_model(path).heads_per_shard == 8


def test_unknown_key_suggests_the_field(tmp_path):
    msg = error_of(tmp_path, layer=32)
    assert "bad.yaml" in msg and "layer:" in msg and "did you mean 'layers'" in msg


def test_heads_not_dividing_d_model(tmp_path):
    msg = error_of(tmp_path, heads=48)
    assert "bad.yaml: heads:" in msg and "48" in msg and "4096" in msg


def test_tp_not_dividing_heads(tmp_path):
    msg = error_of(tmp_path, tp=3)
    assert "bad.yaml: tp:" in msg and "32 heads" in msg


def test_tp_not_dividing_ffn(tmp_path):
    msg = error_of(tmp_path, ffn_dim=4100, tp=8)
    assert "bad.yaml: tp:" in msg and "ffn_dim 4100" in msg


def test_pp_not_dividing_layers(tmp_path):
    msg = error_of(tmp_path, pp=3)
    assert "bad.yaml: pp:" in msg and "32 layers" in msg


@pytest.mark.parametrize("field", ["layers", "d_model", "heads", "ffn_dim", "vocab",
                                   "dtype_bytes", "tp", "pp"])
@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_values(tmp_path, field, value):
    msg = error_of(tmp_path, **{field: value})
    assert f"bad.yaml: {field}: must be at least 1" in msg and f"got {value}" in msg


def test_missing_field(tmp_path):
    msg = error_of(tmp_path, vocab=None)
    assert "bad.yaml: vocab: missing required field" in msg


def test_bad_choice_suggests(tmp_path):
    msg = error_of(tmp_path, ffn_kind="swiglu2")
    assert "bad.yaml: ffn_kind:" in msg and "did you mean 'swiglu'" in msg


def test_wrong_type(tmp_path):
    msg = error_of(tmp_path, rotary="yes")
    assert "bad.yaml: rotary: expected true or false" in msg


def test_override_is_named(tmp_path):
    with pytest.raises(UserError) as info:
        load_model("gpt3-7b", ["tp=3"])
    assert "override 'tp=3': tp:" in str(info.value)


def test_unknown_model_lists_the_shipped_ones():
    with pytest.raises(UserError) as info:
        load_model("gpt3-8b")
    msg = str(info.value)
    assert msg.startswith("gpt3-8b:") and "gpt3-7b" in msg and "llama2-13b" in msg
