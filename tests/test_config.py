"""Hardware configuration: presets load, derived values match hand computation, merging works."""

import dataclasses
import json

import pytest
import yaml

from neupims_py.config import (
    HwConfig,
    config_hash,
    hw_to_dict,
    iter_fields,
    list_presets,
    load_hw,
    presets_dir,
)

PRESETS = ("hbm2-8gb-x128", "neupims", "npu-pim", "npu-only")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_by_path_and_by_name(name):
    by_path = load_hw(presets_dir() / f"{name}.yaml")
    assert isinstance(by_path, HwConfig)
    assert by_path.name == name
    assert by_path.source  # every shipped preset cites where its values come from
    assert load_hw(name) == by_path


def test_presets_listed():
    assert set(PRESETS) <= set(list_presets())


def test_hbm2_derived_values():
    mem = load_hw("hbm2-8gb-x128").memory
    g = mem.geometry
    assert g.banks == 16
    assert g.banks_per_channel == 16
    assert g.devices_per_rank == 1
    assert g.page_bytes == 2048  # 64 columns * 128 bits * prefetch 2
    assert g.burst_bytes == 64  # 128-bit bus * BL 4
    assert g.bursts_per_row == 32
    assert mem.capacity_bytes == 8 * 2**30
    assert mem.burst_cycles == 2
    assert mem.timing.RL == 14 and mem.timing.WL == 4
    assert mem.read_delay == 16 and mem.write_delay == 6
    assert mem.controller.dual_command_issue is True
    assert mem.pim.enabled is False


@pytest.mark.parametrize(
    "addr, field",
    [(0x40, "co"), (0x800, "ch"), (0x4000, "ba"), (0x10000, "bg"), (0x40000, "ro")],
)
def test_hbm2_address_mapping_matches_dramsim3(addr, field):
    mem = load_hw("hbm2-8gb-x128").memory
    expected = dict.fromkeys(("ch", "ra", "bg", "ba", "ro", "co"), 0)
    expected[field] = 1
    assert mem.decode_address(addr) == expected
    shift, mask = mem.address_fields[field]
    assert 1 << shift == addr and mask > 0


def test_hbm2_address_fields_cover_the_capacity_exactly():
    mem = load_hw("hbm2-8gb-x128").memory
    fields = mem.address_fields
    top = max(f.shift + f.mask.bit_length() for f in fields.values())
    assert 2**top == mem.capacity_bytes
    bits = sorted((f.shift, f.shift + f.mask.bit_length()) for f in fields.values() if f.mask)
    assert bits[0][0] == 6  # 64-byte bursts
    for (_, end), (start, _) in zip(bits, bits[1:]):
        assert end == start  # contiguous, no overlap


def test_neupims_derived_values():
    cfg = load_hw("neupims")
    g = cfg.memory.geometry
    assert g.ranks == 2
    assert g.banks_per_channel == 32
    assert g.page_bytes == 1024
    assert g.bursts_per_row == 16
    assert cfg.memory.capacity_bytes == 32 * 2**30
    assert cfg.memory.controller.dual_command_issue is False
    assert cfg.memory.controller.cmd_queue_size == 128
    assert cfg.memory.pim.enabled and cfg.memory.pim.row_buffers == "dual"
    assert cfg.memory.pim.tGWRITE == (cfg.memory.timing.tCCD_S + cfg.memory.timing.tCCD_L) * 32
    assert cfg.memory.pim.tREADRES == cfg.memory.read_delay
    assert cfg.system.mode == "neupims" and cfg.system.sub_batch_interleaving
    assert cfg.npu.macs_per_cycle == 8 * 128 * 128
    # The artifact's switch_co_ch: 4 column bits above the 64-byte offset, then 5 channel bits.
    assert cfg.memory.address_fields["co"] == (6, 15)
    assert cfg.memory.address_fields["ch"] == (10, 31)


def test_multi_device_rank_geometry():
    # DDR4-style x8 devices on a 64-bit bus: a rank's row spans 8 devices.
    mem = load_hw(
        "hbm2-8gb-x128",
        [
            "memory.protocol=DDR4",
            "memory.controller.dual_command_issue=false",
            "memory.geometry.device_width_bits=8",
            "memory.geometry.bus_width_bits=64",
            "memory.geometry.columns=1024",
            "memory.geometry.prefetch=1",
            "memory.geometry.burst_length=8",
            "memory.geometry.rows=65536",
            "memory.geometry.channel_size_mib=8192",
        ],
    ).memory
    g = mem.geometry
    assert (g.devices_per_rank, g.page_bytes, g.row_bytes) == (8, 1024, 8192)
    assert g.burst_bytes == 64 and g.bursts_per_row == 128
    assert mem.burst_cycles == 4
    assert mem.address_fields["co"] == (6, 127)


def test_baseline_presets_differ_from_neupims_only_where_they_say():
    neupims = hw_to_dict(load_hw("neupims"))
    for name, changes in {
        "npu-pim": {
            "memory.pim.row_buffers": "single",
            "system.mode": "npu+pim",
            "system.sub_batch_interleaving": False,
            "scheduler.channel_policy": "round-robin",
        },
        "npu-only": {
            "memory.pim.enabled": False,
            "system.mode": "npu-only",
            "system.sub_batch_interleaving": False,
            "scheduler.channel_policy": "round-robin",
        },
    }.items():
        other = hw_to_dict(load_hw(name))
        diff = {
            k: v
            for k, v in flatten(other).items()
            if flatten(neupims)[k] != v and k not in ("name", "description", "source")
        }
        assert diff == changes


def flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, full))
        else:
            out[full] = value
    return out


def test_preset_deep_merge_and_overrides(tmp_path):
    path = write(
        tmp_path,
        "mine.yaml",
        "preset: neupims\nname: mine\n"
        "memory:\n  timing:\n    CL: 20\n  geometry:\n    channels: 16\n",
    )
    cfg = load_hw(path)
    base = load_hw("neupims")
    assert cfg.name == "mine"
    assert cfg.memory.timing.CL == 20
    assert cfg.memory.geometry.channels == 16
    # siblings of the overridden keys come from the preset
    assert cfg.memory.timing.tRP == base.memory.timing.tRP
    assert cfg.memory.geometry.rows == base.memory.geometry.rows
    assert cfg.npu == base.npu

    cfg = load_hw(
        path,
        [
            "memory.timing.tRCDRD=16",
            "memory.geometry.channels=8",
            "system.mode=npu-only",
            "memory.timing.CL=22",
        ],
    )
    assert cfg.memory.timing.tRCDRD == 16
    assert cfg.memory.timing.tRCDWR == base.memory.timing.tRCDWR
    assert cfg.memory.geometry.channels == 8
    assert cfg.memory.capacity_bytes == 8 * 2**30
    assert cfg.system.mode == "npu-only"
    assert cfg.memory.timing.CL == 22  # overrides win over the file, which wins over its preset


def test_preset_chain_and_local_lookup_first(tmp_path):
    # a local preset named like a shipped one is found first, and may itself extend the shipped one
    write(tmp_path, "neupims.yaml", "preset: neupims\nmemory:\n  timing:\n    tRP: 15\n")
    write(tmp_path, "mine.yaml", "preset: neupims\nname: mine\n")
    cfg = load_hw(tmp_path / "mine.yaml")
    assert cfg.memory.timing.tRP == 15
    assert cfg.memory.timing.tRAS == 34


def test_trcd_shorthand(tmp_path):
    path = write(tmp_path, "a.yaml", "preset: neupims\nname: a\nmemory:\n  timing:\n    tRCD: 18\n")
    cfg = load_hw(path)
    assert cfg.memory.timing.tRCDRD == cfg.memory.timing.tRCDWR == 18
    path = write(
        tmp_path, "b.yaml", "preset: neupims\nname: b\nmemory:\n  timing: {tRCD: 18, tRCDWR: 12}\n"
    )
    cfg = load_hw(path)
    assert (cfg.memory.timing.tRCDRD, cfg.memory.timing.tRCDWR) == (18, 12)
    cfg = load_hw("neupims", ["memory.timing.tRCD=20"])
    assert cfg.memory.timing.tRCDRD == cfg.memory.timing.tRCDWR == 20


def test_override_values_are_yaml_scalars():
    cfg = load_hw(
        "neupims",
        ["memory.controller.dual_command_issue=true", "npu.clock_mhz=1500", "description=a b"],
    )
    assert cfg.memory.controller.dual_command_issue is True
    assert cfg.npu.clock_mhz == 1500.0 and isinstance(cfg.npu.clock_mhz, float)
    assert cfg.description == "a b"


def test_replace_keeps_properties_correct():
    cfg = load_hw("neupims")
    geometry = dataclasses.replace(cfg.memory.geometry, ranks=4, channel_size_mib=2048)
    memory = dataclasses.replace(cfg.memory, geometry=geometry)
    assert memory.geometry.banks_per_channel == 64
    assert memory.capacity_bytes == 64 * 2**30
    assert memory.address_fields["ra"] == (19, 3)
    assert memory.address_fields["ro"].shift == 21

    timing = dataclasses.replace(cfg.memory.timing, CL=20, AL=1)
    memory = dataclasses.replace(cfg.memory, timing=timing)
    assert memory.timing.RL == 21
    assert memory.read_delay == 23
    assert cfg.memory.read_delay == 16  # the original is untouched

    controller = dataclasses.replace(cfg.memory.controller, address_mapping="chrorabgbaco")
    memory = dataclasses.replace(cfg.memory, controller=controller)
    assert memory.address_fields["ch"].shift == 6 + 4 + 2 + 2 + 1 + 15


def test_dict_round_trip_and_hash(tmp_path):
    cfg = load_hw("neupims")
    tree = hw_to_dict(cfg)
    json.dumps(tree)  # plain, serialisable
    path = write(tmp_path, "resolved.yaml", yaml.safe_dump(tree))
    again = load_hw(path)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert len(config_hash(cfg)) == 64
    assert config_hash(load_hw("neupims", ["memory.timing.CL=15"])) != config_hash(cfg)
    # written as an int or a float, a float field hashes the same
    assert config_hash(load_hw("neupims", ["npu.clock_mhz=1000.0"])) == config_hash(cfg)


def test_configs_are_frozen_and_hashable():
    cfg = load_hw("neupims")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.memory.timing.CL = 1
    assert {cfg: 1}[load_hw("neupims")] == 1


def test_every_field_has_help_and_a_unique_key():
    docs = list(iter_fields(HwConfig))
    assert len(docs) == len({d.key for d in docs}) > 80
    assert all(d.help for d in docs)
    timing = [d for d in docs if d.key.startswith("memory.timing.")]
    assert len(timing) == 23
    assert all(d.unit == "cycles" and d.default is dataclasses.MISSING for d in timing)
    mode = next(d for d in docs if d.key == "system.mode")
    assert mode.choices == ("npu-only", "npu+pim", "neupims")
