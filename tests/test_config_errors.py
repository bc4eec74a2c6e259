"""Hardware configuration mistakes: each is a UserError naming the file, the key and the fix."""

import dataclasses

import pytest

from neupims_py.config import ConfigError, load_hw, presets_dir
from neupims_py.errors import UserError

# A child of the shipped preset: every test changes one thing and names the file "bad.yaml".
HEADER = "preset: neupims\nname: bad\n"


def load_text(tmp_path, text, overrides=()):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return load_hw(path, overrides)


def error_of(tmp_path, text, overrides=()) -> str:
    with pytest.raises(UserError) as info:
        load_text(tmp_path, text, overrides)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)  # the CLI prints one line
    return str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    msg = error_of(tmp_path, HEADER + "memory:\n  timing:\n    CL: 14: 15\n    CWL: 4\n")
    assert "bad.yaml" in msg
    assert "invalid YAML" in msg
    assert "line 5" in msg


def test_duplicate_key_is_an_error(tmp_path):
    msg = error_of(tmp_path, HEADER + "system:\n  mode: neupims\n  mode: npu-only\n")
    assert "bad.yaml" in msg and "'mode' given twice" in msg and "line 5" in msg


def test_top_level_must_be_a_mapping(tmp_path):
    msg = error_of(tmp_path, "- neupims\n")
    assert "bad.yaml" in msg and "mapping" in msg


def test_unknown_key_suggests_the_close_match_and_lists_valid_keys(tmp_path):
    msg = error_of(tmp_path, HEADER + "memory:\n  timing:\n    tRCDR: 14\n")
    assert "bad.yaml: memory.timing.tRCDR: unknown key" in msg
    assert "did you mean 'tRCDRD'?" in msg
    assert "valid keys of memory.timing: CL, CWL, AL, tRCDRD" in msg


def test_unknown_top_level_key(tmp_path):
    msg = error_of(tmp_path, "presets: neupims\n")
    assert "bad.yaml: presets: unknown key (did you mean 'preset'?)" in msg
    assert "valid keys of the top level:" in msg


def test_unknown_key_in_an_override(tmp_path):
    with pytest.raises(UserError) as info:
        load_hw("neupims", ["memory.geometry.chanels=16"])
    msg = str(info.value)
    assert "override 'memory.geometry.chanels=16'" in msg
    assert "memory.geometry.chanels: unknown key (did you mean 'channels'?)" in msg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("memory.timing=3", "memory.timing: is a section; override one of its fields: CL, CWL"),
        ("memory.timing.CL", "expected dotted.key=value"),
        ("memory.timing.CL.x=1", "memory.timing.CL.x: memory.timing.CL is a single value"),
        ("memory.timing.CL=[1", "cannot read the value '[1' as a YAML scalar"),
    ],
)
def test_malformed_overrides(override, expected):
    with pytest.raises(UserError) as info:
        load_hw("neupims", [override])
    assert f"override '{override}': " in str(info.value)
    assert expected in str(info.value)


def test_cross_field_error_names_the_override_that_caused_it():
    with pytest.raises(UserError) as info:
        load_hw("neupims", ["memory.geometry.rows=16384"])
    assert str(info.value).startswith("override 'memory.geometry.rows=16384': "
                                      "memory.geometry.channel_size_mib: geometry does not add up")


def test_section_must_be_a_mapping(tmp_path):
    msg = error_of(tmp_path, HEADER + "memory:\n  timing: 14\n")
    assert "bad.yaml: memory.timing: expected a mapping of Timing fields, got 14" in msg


def test_missing_required_field_is_named_with_its_unit(tmp_path):
    source = (presets_dir() / "neupims.yaml").read_text()
    assert "    tRP: 14\n" in source
    msg = error_of(tmp_path, source.replace("    tRP: 14\n", ""))
    assert "bad.yaml: memory.timing.tRP: missing required field" in msg
    assert "(cycles)" in msg


def test_missing_section_names_its_first_required_field(tmp_path):
    msg = error_of(tmp_path, "name: x\n")
    assert "bad.yaml: memory.protocol: missing required field" in msg


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("memory:\n  timing:\n    CL: fourteen\n", "memory.timing.CL",
         "expected an integer >= 0 (cycles), got 'fourteen' (str)"),
        ("memory:\n  timing:\n    CL: 14.5\n", "memory.timing.CL", "expected an integer"),
        ("memory:\n  geometry:\n    rows: true\n", "memory.geometry.rows",
         "expected a power of two (1, 2, 4, ...) (rows), got True (bool)"),
        ("memory:\n  controller:\n    dual_command_issue: 1\n",
         "memory.controller.dual_command_issue", "expected true or false, got 1 (int)"),
        ("system:\n  mode: neupim\n", "system.mode",
         "expected one of [npu-only, npu+pim, neupims], got 'neupim' (did you mean 'neupims'?)"),
        ("memory:\n  pim:\n    row_buffers: triple\n", "memory.pim.row_buffers",
         "expected one of [single, dual]"),
        ("memory:\n  protocol: 2\n", "memory.protocol", "expected one of [HBM2, HBM, DDR4]"),
        ("npu:\n  clock_mhz: fast\n", "npu.clock_mhz", "expected a number >= 1 (MHz)"),
    ],
)
def test_wrong_type(tmp_path, text, key, expected):
    msg = error_of(tmp_path, HEADER + text)
    assert f"bad.yaml: {key}: {expected}" in msg


@pytest.mark.parametrize("name", ["CL", "tRP", "tFAW", "tREFI", "tPPD"])
def test_negative_timing(tmp_path, name):
    msg = error_of(tmp_path, HEADER + f"memory:\n  timing:\n    {name}: -1\n")
    assert f"bad.yaml: memory.timing.{name}: must not be negative, got -1 cycles" in msg


@pytest.mark.parametrize(
    "name",
    ["channels", "ranks", "bankgroups", "banks_per_group", "rows", "columns", "burst_length",
     "bus_width_bits", "device_width_bits", "prefetch"],
)
@pytest.mark.parametrize("value", [0, 3, 12])
def test_power_of_two(tmp_path, name, value):
    msg = error_of(tmp_path, HEADER + f"memory:\n  geometry:\n    {name}: {value}\n")
    assert f"bad.yaml: memory.geometry.{name}: must be a power of two (1, 2, 4, ...), got {value}" \
        in msg


def test_geometry_must_add_up_to_the_capacity(tmp_path):
    msg = error_of(tmp_path, HEADER + "memory:\n  geometry:\n    rows: 16384\n")
    assert "bad.yaml: memory.geometry.channel_size_mib:" in msg
    assert "= 512 MiB, but channel_size_mib is 1024" in msg


def test_bus_narrower_than_a_device(tmp_path):
    msg = error_of(tmp_path, HEADER + "memory:\n  geometry:\n    bus_width_bits: 64\n")
    assert "bad.yaml: memory.geometry.bus_width_bits: must be a multiple of device_width_bits" \
        in msg


@pytest.mark.parametrize(
    "mapping, problem",
    [
        ("rorabgbach", "10 characters instead of 12"),
        ("rorabgbachcx", "unknown field 'cx'"),
        ("rorabgbachch", "ch repeated, co missing"),
        ("RORABGBACHCO", "unknown field 'RO'"),
    ],
)
def test_address_mapping(tmp_path, mapping, problem):
    msg = error_of(tmp_path, HEADER + f"memory:\n  controller:\n    address_mapping: {mapping}\n")
    assert "bad.yaml: memory.controller.address_mapping: expected 6 two-letter fields using " \
        "each of ch ra bg ba ro co exactly once" in msg
    assert problem in msg


def test_pim_modes_need_pim(tmp_path):
    msg = error_of(tmp_path, HEADER + "memory:\n  pim:\n    enabled: false\n")
    assert "bad.yaml: system.mode: mode neupims runs attention on PIM" in msg


def test_dual_command_issue_needs_hbm(tmp_path):
    msg = error_of(
        tmp_path,
        HEADER + "memory:\n  protocol: DDR4\n  controller:\n    dual_command_issue: true\n",
    )
    assert "bad.yaml: memory.controller.dual_command_issue: dual command issue is an HBM" in msg


def test_error_names_the_file_the_value_came_from(tmp_path):
    (tmp_path / "base.yaml").write_text(HEADER + "memory:\n  timing:\n    tWR: -3\n")
    msg = error_of(tmp_path, "preset: base\nname: child\n")
    assert "base.yaml: memory.timing.tWR: must not be negative" in msg
    # an override is named as the source of its own bad value
    msg = error_of(tmp_path, HEADER, ["memory.geometry.ranks=3"])
    assert "override 'memory.geometry.ranks=3': memory.geometry.ranks: must be a power" in msg


def test_preset_cycle_is_detected(tmp_path):
    (tmp_path / "a.yaml").write_text("preset: b\nname: a\n")
    (tmp_path / "b.yaml").write_text("preset: c\nname: b\n")
    (tmp_path / "c.yaml").write_text("preset: a\nname: c\n")
    with pytest.raises(UserError) as info:
        load_hw(tmp_path / "a.yaml")
    assert "preset cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml" in str(info.value)
    assert "c.yaml: preset:" in str(info.value)


def test_self_preset_without_a_shipped_one_is_a_cycle(tmp_path):
    (tmp_path / "loop.yaml").write_text("preset: loop\nname: loop\n")
    with pytest.raises(UserError, match="preset cycle: loop.yaml -> loop.yaml"):
        load_hw(tmp_path / "loop.yaml")


def test_unknown_preset(tmp_path):
    msg = error_of(tmp_path, "preset: nopims\nname: x\n")
    assert "bad.yaml: preset: preset 'nopims' not found" in msg
    assert "neupims" in msg  # lists the shipped ones


def test_unknown_file_or_preset_name():
    with pytest.raises(UserError) as info:
        load_hw("nopims")
    assert "nopims: no such file, nor a preset of that name; presets: " in str(info.value)
    assert "neupims" in str(info.value)


def test_replace_revalidates():
    timing = load_hw("neupims").memory.timing
    with pytest.raises(ConfigError, match="tRP: must not be negative"):
        dataclasses.replace(timing, tRP=-1)
    geometry = load_hw("neupims").memory.geometry
    with pytest.raises(ConfigError, match="channel_size_mib: geometry does not add up"):
        dataclasses.replace(geometry, ranks=4)


def test_off_is_a_string_not_a_boolean():
    """YAML 1.1 reads `off` as false; the loader uses YAML 1.2 booleans (true/false only),
    so a choice named "off" can be given plainly, in a file or an override."""
    from neupims_py.config import load_hw

    cfg = load_hw("neupims", ["memory.controller.refresh_policy=off"])
    assert cfg.memory.controller.refresh_policy == "off"
    with pytest.raises(UserError, match="sub_batch_interleaving"):
        load_hw("neupims", ["system.sub_batch_interleaving=yes"])
