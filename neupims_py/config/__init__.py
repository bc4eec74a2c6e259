"""Hardware configuration: validated, frozen dataclasses loaded from YAML presets.

    cfg = load_hw("hwconfigs/neupims.yaml", ["memory.timing.tRCDRD=16"])
    cfg = load_hw("neupims")                     # a shipped preset by name
    cfg.memory.geometry.page_bytes               # derived values are properties
    dataclasses.replace(cfg.memory.timing, CL=16)  # sweeps; construction re-validates
    hw_to_dict(cfg), config_hash(cfg)            # for writing the resolved config into results

``iter_fields(HwConfig)`` lists every field with its dotted key, help text, unit, default
and choices, for generating command-line options.
"""

from neupims_py.config.hw import (
    AddressField,
    ControllerConfig,
    Geometry,
    HwConfig,
    MemoryConfig,
    NpuConfig,
    PimConfig,
    PowerConfig,
    SchedulerConfig,
    SystemConfig,
    Timing,
    VectorOpCycles,
)
from neupims_py.config.loader import (
    config_hash,
    hw_to_dict,
    list_presets,
    load_config,
    load_hw,
    presets_dir,
    to_dict,
)
from neupims_py.config.schema import ConfigError, FieldDoc, iter_fields

__all__ = [
    "AddressField",
    "ConfigError",
    "ControllerConfig",
    "FieldDoc",
    "Geometry",
    "HwConfig",
    "MemoryConfig",
    "NpuConfig",
    "PimConfig",
    "PowerConfig",
    "SchedulerConfig",
    "SystemConfig",
    "Timing",
    "VectorOpCycles",
    "config_hash",
    "hw_to_dict",
    "iter_fields",
    "list_presets",
    "load_config",
    "load_hw",
    "presets_dir",
    "to_dict",
]
