"""DRAM layer above the engine: timing rules as data, lowering of the config, trace replay."""
