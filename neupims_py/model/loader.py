"""Finding and reading model files: ``programs/NAME.yaml`` or any path, with overrides.

Model files use the hardware configs' YAML machinery (``neupims_py.config.load_config``):
unknown keys, wrong types and inconsistent fields are ``ConfigError``s naming the file and
the field, ``"key=value"`` overrides apply on top, and ``preset: NAME`` extends another
model file (looked up next to the file).
"""

from collections.abc import Sequence
from pathlib import Path

import neupims_py
from neupims_py.config import load_config
from neupims_py.config.loader import locate_shipped
from neupims_py.model.config import ModelConfig


def programs_dir() -> Path:
    """The repository's ``programs/`` directory of shipped models."""
    return Path(neupims_py.__file__).resolve().parent.parent / "programs"


def list_models(directory: Path | None = None) -> list[str]:
    """Names of the model files in ``directory`` (default: the shipped ones)."""
    directory = programs_dir() if directory is None else directory
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_model(name_or_path: str | Path, overrides: Sequence[str] = ()) -> ModelConfig:
    """Load a model from a YAML file, or a shipped one by bare name ("gpt3-7b").

    ``overrides`` are ``"key=value"`` strings (``"tp=8"``), applied after the file.
    """
    return load_config(ModelConfig, _locate(name_or_path), overrides)


def _locate(name_or_path: str | Path) -> Path:
    return locate_shipped(name_or_path, programs_dir(), "shipped model", list_models)
