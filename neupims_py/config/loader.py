"""Reading configurations from YAML: presets, deep merge, overrides, and the canonical form.

A YAML file may start with ``preset: NAME``: NAME.yaml is looked up next to the file, then
in the repository's ``hwconfigs/``; it is loaded the same way (recursively) and the file's
keys are deep-merged over it. Then ``"dotted.key=value"`` overrides are applied (values are
YAML scalars), and the merged tree is turned into the frozen dataclasses, which validate
themselves. Every mistake is a ``UserError`` naming the file (or override) and dotted key.
"""

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

import neupims_py
from neupims_py.config.hw import HwConfig
from neupims_py.config.schema import (
    ConfigError,
    describe_expected,
    has_default,
    is_section,
    join_key,
)
from neupims_py.errors import UserError

PRESET_KEY = "preset"


def presets_dir() -> Path:
    """The repository's ``hwconfigs/`` directory of shipped presets."""
    return Path(neupims_py.__file__).resolve().parent.parent / "hwconfigs"


def list_presets(directory: Path | None = None) -> list[str]:
    """Names of the hardware presets in ``directory`` (default: the shipped ones); cluster
    files (a top-level ``cluster:`` key, see neupims_py/cluster) are not presets."""
    directory = presets_dir() if directory is None else directory
    return sorted(p.stem for p in directory.glob("*.yaml")
                  if not re.search(r"^cluster\s*:", p.read_text(encoding="utf-8"), re.MULTILINE))


def load_hw(path: str | Path, overrides: Sequence[str] = ()) -> HwConfig:
    """Load a hardware configuration from a YAML file, or a bare preset name ("neupims").

    ``overrides`` are ``"dotted.key=value"`` strings (``"memory.timing.tRCDRD=16"``),
    applied after presets; an unknown key is an error, as it is in a file.
    """
    return load_config(HwConfig, path, overrides)


def load_config(cls: type, path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Load any config dataclass tree ``cls`` from YAML, with presets and overrides."""
    file = _locate(path)
    tree, origins = _read_tree(cls, file, chain=())
    for text in overrides:
        _apply_override(cls, tree, origins, text)
    return _build(cls, tree, origins, "", str(file))


def to_dict(cfg: Any) -> dict:
    """A config as plain nested dicts (fields only, no derived values): YAML/JSON-ready.

    Loading a YAML dump of it gives back an equal config.
    """
    return dataclasses.asdict(cfg)


def hw_to_dict(cfg: HwConfig) -> dict:
    """The resolved hardware configuration as plain dicts, for writing into results."""
    return to_dict(cfg)


def config_hash(cfg: Any) -> str:
    """sha256 (hex) of the canonical JSON of a config: sorted keys, no whitespace."""
    text = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- finding and reading files


def locate_shipped(name_or_path: str | Path, directory: Path, what: str, names) -> Path:
    """A YAML file by path, or a shipped one by bare name (NAME.yaml in ``directory``).
    ``what`` ("preset", "model") and ``names()`` (the shipped names) word the error."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = str(name_or_path)
    if p.suffix == "" and "/" not in name and "\\" not in name:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise UserError(f"no such file, nor a {what} of that name; {what}s: " + ", ".join(names()), path=name)


def _locate(path: str | Path) -> Path:
    return locate_shipped(path, presets_dir(), "preset", list_presets)


def _find_preset(name: str, file: Path) -> Path:
    """NAME.yaml next to ``file``, else in hwconfigs/.

    A file that names itself (``./neupims.yaml`` saying ``preset: neupims``) gets the
    shipped preset of that name: extending a preset under its own name is natural.
    """
    stem = name.removesuffix(".yaml")
    candidates = [file.parent / f"{stem}.yaml", presets_dir() / f"{stem}.yaml"]
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve() != file.resolve():
            return candidate
    if candidates[0].is_file():
        raise UserError(f"preset cycle: {file.name} -> {file.name}", path=str(file),
                        field=PRESET_KEY)
    raise UserError(
        f"preset '{name}' not found; looked for {candidates[0]} and {candidates[1]}; shipped "
        "presets: " + ", ".join(list_presets()),
        path=str(file),
        field=PRESET_KEY,
    )


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error, and only
    true/false are booleans (YAML 1.2), so `refresh_policy: off` stays the string "off"."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"invalid YAML{where}: {problem}", path=source) from None
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML: {exc}", path=source) from None


def _read_tree(cls: type, file: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    """The merged key tree of ``file`` and its presets, and the source of every leaf key."""
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc}", path=source) from None
    data = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(
            f"expected a mapping of keys at the top level, got {type(data).__name__}",
            path=source,
        )
    data = dict(data)
    if cls is HwConfig and "cluster" in data:
        raise UserError(
            "this is a cluster file (a `cluster:` section of device pools): `neupims-sim run "
            "CLUSTER.yaml TRACE` runs it; this command needs one device's hardware file, such "
            "as one of the pools' presets",
            path=source, field="cluster",
        )
    preset = data.pop(PRESET_KEY, None)
    own = _normalise(cls, data, "", source, extra_keys=(PRESET_KEY,))
    own_origins = dict.fromkeys(_leaf_keys(own, ""), source)
    if preset is None:
        return own, own_origins
    if not isinstance(preset, str) or not preset:
        raise UserError(
            f"expected the name of a preset (NAME for NAME.yaml), got {preset!r}",
            path=source,
            field=PRESET_KEY,
        )
    base_file = _find_preset(preset, file)
    here = chain + (file.resolve(),)
    if base_file.resolve() in here:
        names = [p.name for p in here[here.index(base_file.resolve()):]] + [base_file.name]
        raise UserError("preset cycle: " + " -> ".join(names), path=source, field=PRESET_KEY)
    base, origins = _read_tree(cls, base_file, here)
    origins.update(own_origins)
    return _deep_merge(base, own), origins


def _deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _leaf_keys(tree: dict, prefix: str):
    for key, value in tree.items():
        full = join_key(prefix, key)
        if isinstance(value, dict):
            yield from _leaf_keys(value, full)
        else:
            yield full


# ---------------------------------------------------------------- keys


def _unknown_key(key: Any, valid: Sequence[str], prefix: str, source: str) -> UserError:
    by_lower = {v.lower(): v for v in valid}
    typed = str(key).lower()
    close = difflib.get_close_matches(typed, list(by_lower), n=3, cutoff=0.6)
    # Among equally close names, one the key is the start of (a truncated name) is likeliest.
    close.sort(key=lambda name: not name.startswith(typed))
    hint = f" (did you mean '{by_lower[close[0]]}'?)" if close else ""
    section = prefix or "the top level"
    return UserError(
        f"unknown key{hint}; valid keys of {section}: {', '.join(valid)}",
        path=source,
        field=join_key(prefix, str(key)),
    )


def _shorthands(cls: type) -> dict[str, tuple[str, ...]]:
    return dict(getattr(cls, "SHORTHANDS", ()))


def _normalise(cls: type, data: dict, prefix: str, source: str, extra_keys=()) -> dict:
    """Check one file's keys against the schema and expand shorthands; values stay raw."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = dict(data)
    for short, targets in _shorthands(cls).items():
        if short in data:
            value = data.pop(short)
            for target in targets:
                data.setdefault(target, value)
    result = {}
    for key, value in data.items():
        if key not in fields:
            valid = list(fields) + list(_shorthands(cls)) + list(extra_keys)
            raise _unknown_key(key, valid, prefix, source)
        f = fields[key]
        full = join_key(prefix, key)
        if is_section(f.type):
            if value is None:  # "power:" with nothing under it
                value = {}
            if not isinstance(value, dict):
                raise UserError(
                    f"expected {describe_expected(f)}, got {value!r}", path=source, field=full
                )
            value = _normalise(f.type, value, full, source)
        result[key] = value
    return result


def _apply_override(cls: type, tree: dict, origins: dict[str, str], text: str) -> None:
    source = f"override '{text}'"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError("expected dotted.key=value, e.g. memory.timing.tRCDRD=16", path=source)
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"cannot read the value {raw!r} as a YAML scalar", path=source) from None
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i])
        fields = {f.name: f for f in dataclasses.fields(cls)}
        shorthands = _shorthands(cls)
        last = i == len(parts) - 1
        if part in shorthands and last:
            for target in shorthands[part]:
                node[target] = value
                origins[join_key(prefix, target)] = source
            return
        if part not in fields:
            raise _unknown_key(part, list(fields) + list(shorthands), prefix, source)
        f = fields[part]
        if last:
            if is_section(f.type):
                sub = ", ".join(g.name for g in dataclasses.fields(f.type))
                raise UserError(f"is a section; override one of its fields: {sub}",
                                path=source, field=key)
            node[part] = value
            origins[key] = source
            return
        if not is_section(f.type):
            raise UserError(f"{join_key(prefix, part)} is a single value, it has no fields",
                            path=source, field=key)
        node = node.setdefault(part, {})
        cls = f.type


# ---------------------------------------------------------------- building


def _build(cls: type, tree: dict, origins: dict[str, str], prefix: str, top: str) -> Any:
    """Turn a checked key tree into ``cls``; errors name the file each value came from."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = join_key(prefix, f.name)
        if is_section(f.type):
            kwargs[f.name] = _build(f.type, tree.get(f.name, {}), origins, key, top)
        elif f.name in tree:
            kwargs[f.name] = tree[f.name]
        elif not has_default(f):
            raise ConfigError(
                f"missing required field: expected {describe_expected(f)}; {f.metadata['help']}",
                path=top,
                field=key,
            )
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        keys = [join_key(prefix, k) for k in (exc.field or "", *exc.related) if k] or [prefix]
        source = _blame([origins.get(k, top) for k in keys], top)
        raise exc.within(prefix, source) from None


def _blame(sources: list[str], top: str) -> str:
    """The source to name for an error involving values from ``sources``.

    The last word wins, as in merging: an override, else the file that was loaded, else the
    preset the value came from.
    """
    for source in sources:
        if source.startswith("override "):
            return source
    return top if top in sources else sources[0]
