"""Sweep files: what to run, as a grid or a list of `run` configurations.

    base:                       # every point starts from these
      hw: ../hwconfigs/neupims.yaml   # file (relative to this file) or preset name
      model: gpt3-7b
      trace: ../traces/synth-tiny.h5
      seed: 0
      scheduler: {policy: orca}       # nested sections are dotted keys: scheduler.policy
    grid:                       # field -> values; the points are the cartesian product
      scheduler.max_batch_size: [8, 32]
      mode: [npu-only, neupims]
    points:                     # or (also) a list of points; with a grid, each is crossed with it
      - {memory.geometry.channels: 16}
    plots: [throughput.output_tokens_per_s:scheduler.max_batch_size]

A field is a `-p KEY=VALUE` key of `neupims-sim run` (any hardware configuration key, such
as memory.timing.tRCDRD or scheduler.max_batch_size) or one of the run's own options: hw,
model, trace, mode, seed, max_requests, exact, exact_tokens. An unknown field is an error
naming the file and the field; a bad value (a negative size) fails only its point.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from neupims_py.compiler.cli import MODE_OVERRIDES
from neupims_py.config import HwConfig, config_hash, iter_fields, load_hw
from neupims_py.config.loader import parse_yaml  # the strict YAML 1.2 reader configs use
from neupims_py.config.schema import is_section
from neupims_py.errors import UserError
from neupims_py.model import load_model

# The run's own options: field -> (type, default). hw and trace have no default.
RUN_FIELDS = {
    "hw": (str, None),
    "model": (str, "gpt3-7b"),
    "trace": (str, None),
    "mode": (str, None),
    "seed": (int, 0),
    "max_requests": (int, None),
    "exact": (bool, False),
    "exact_tokens": (bool, False),
}
PATH_FIELDS = ("hw", "model", "trace")
TOP_KEYS = ("base", "grid", "points", "plots")


def hw_keys() -> tuple[str, ...]:
    """Every `-p` key of the hardware configuration, shorthands (memory.timing.tRCD) included."""
    keys = [f.key for f in iter_fields(HwConfig)]

    def shorthands(cls, prefix):
        for short, _ in getattr(cls, "SHORTHANDS", ()):
            keys.append(f"{prefix}{short}")
        for f in dataclasses.fields(cls):
            if is_section(f.type):
                shorthands(f.type, f"{prefix}{f.name}.")

    shorthands(HwConfig, "")
    return tuple(keys)


@dataclass(frozen=True)
class Sweep:
    path: str
    points: tuple[dict, ...]  # every point's fields, base included, in sweep order
    swept: tuple[str, ...]  # the fields that vary (grid keys, then keys the points list set)
    plots: tuple[str, ...]  # METRIC:FIELD


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every mistake is a UserError naming it and the field."""
    file = Path(path)
    source = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such sweep file", path=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc}", path=source) from None
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise UserError("expected a mapping with base:, grid: and/or points:", path=source)
    for key in data:
        if key not in TOP_KEYS:
            raise UserError(f"unknown key; valid: {', '.join(TOP_KEYS)}", path=source, field=str(key))
    valid = (*RUN_FIELDS, *hw_keys())
    base = _fields(data.get("base") or {}, "base", source, valid, file.parent)
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise UserError("expected a mapping of field -> list of values", path=source, field="grid")
    axes = []
    for key, values in grid.items():
        where = f"grid.{key}"
        if not isinstance(values, list) or not values:
            raise UserError(f"expected a non-empty list of values, got {values!r}", path=source,
                            field=where)
        axes.append([_fields({key: v}, "grid", source, valid, file.parent) for v in values])
    listed = data.get("points")
    if listed is not None and (not isinstance(listed, list) or not listed):
        raise UserError("expected a non-empty list of mappings of field: value", path=source,
                        field="points")
    listed = [_fields(p, f"points[{i}]", source, valid, file.parent)
              for i, p in enumerate(listed or [{}])]
    swept = list(grid)
    for p in listed:
        for k in p:
            if k in grid:
                raise UserError("set both by the grid and by a point; give it in one place",
                                path=source, field=k)
            if k not in swept:
                swept.append(k)
    points = []
    for p in listed:
        for combo in itertools.product(*axes):
            point = {**base, **p}
            for part in combo:
                point.update(part)
            for field in ("hw", "trace"):
                if field not in point:
                    raise UserError(f"no {field}: give it under base: (or sweep it)", path=source,
                                    field=f"base.{field}")
            points.append(point)
    plots = data.get("plots") or []
    if not isinstance(plots, list) or not all(isinstance(s, str) for s in plots):
        raise UserError("expected a list of METRIC:FIELD strings", path=source, field="plots")
    for s in plots:
        check_plot(s, swept, f"{source}: plots")
    return Sweep(path=source, points=tuple(points), swept=tuple(swept), plots=tuple(plots))


def check_plot(spec: str, swept, where: str) -> tuple[str, str]:
    metric, sep, field = spec.rpartition(":")
    if not sep or not metric or not field:
        raise UserError(f"expected METRIC:FIELD (e.g. throughput.output_tokens_per_s:"
                        f"{swept[0] if swept else 'mode'}), got {spec!r}", field=where)
    if field not in swept:
        raise UserError(f"{field!r} is not a swept field; swept: {', '.join(swept) or 'none'}",
                        field=where)
    return metric, field


def _fields(mapping, where: str, source: str, valid, root: Path) -> dict:
    """A mapping of fields, nested sections flattened to dotted keys, checked and typed."""
    if not isinstance(mapping, dict):
        raise UserError(f"expected a mapping of field: value, got {mapping!r}", path=source,
                        field=where)
    out = {}
    for key, value in _flatten(mapping, ""):
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"unknown field{hint}; a field is a `run -p` key of the hardware "
                            f"configuration or one of {', '.join(RUN_FIELDS)}", path=source,
                            field=f"{where}.{key}")
        out[key] = _check_value(key, value, f"{where}.{key}", source, root)
    return out


def _flatten(mapping: dict, prefix: str):
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, full + ".")
        else:
            yield full, value


def _check_value(key, value, where, source, root: Path):
    if isinstance(value, list | dict) or value is None:
        raise UserError(f"expected a single value, got {value!r}", path=source, field=where)
    if key not in RUN_FIELDS:
        return value
    kind = RUN_FIELDS[key][0]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"expected a whole number, got {value!r}", path=source, field=where)
    if kind is bool and not isinstance(value, bool):
        raise UserError(f"expected true or false, got {value!r}", path=source, field=where)
    if kind is str:
        value = str(value)
        if key == "mode" and value not in MODE_OVERRIDES:
            raise UserError(f"unknown mode {value!r}; valid: {', '.join(MODE_OVERRIDES)}",
                            path=source, field=where)
        if key in PATH_FIELDS and _looks_like_path(value):
            # absolute, so a worker process (or a Ray node sharing the file system) finds it
            value = str((root / value).resolve())
    return value


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".yaml", ".yml", ".h5"))


# ---------------------------------------------------------------- one point as a `run`


def run_argv(point: dict) -> list[str]:
    """The `neupims-sim run` command line of a point (without --out)."""
    p = {k: point.get(k, default) for k, (_, default) in RUN_FIELDS.items()}
    argv = ["run", p["hw"], p["trace"], "--model", p["model"], "--seed", str(p["seed"]),
            "--quiet"]
    if p["mode"] is not None:
        argv += ["--mode", p["mode"]]
    if p["max_requests"] is not None:
        argv += ["--max-requests", str(p["max_requests"])]
    if p["exact"]:
        argv.append("--exact")
    if p["exact_tokens"]:
        argv.append("--exact-tokens")
    for key in hw_overrides(point):
        argv += ["-p", key]
    return argv


def hw_overrides(point: dict) -> list[str]:
    return [f"{k}={_yaml_scalar(v)}" for k, v in point.items() if k not in RUN_FIELDS]


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def point_key(point: dict, trace_digests: dict) -> str:
    """A hash of the point's resolved configuration: the hardware and model as loaded (their
    config_hash), the trace file's bytes, and the run options. Loading is where a bad value
    shows up (UserError)."""
    mode = point.get("mode")
    hw = load_hw(point["hw"], [*MODE_OVERRIDES.get(mode, ()), *hw_overrides(point)])
    model = load_model(point.get("model", RUN_FIELDS["model"][1]))
    trace = point["trace"]
    if trace not in trace_digests:
        try:
            trace_digests[trace] = hashlib.sha256(Path(trace).read_bytes()).hexdigest()
        except OSError as exc:
            raise UserError(f"cannot read the trace: {exc.strerror}", path=trace) from None
    resolved = {
        "hw": config_hash(hw), "model": config_hash(model), "trace": trace_digests[trace],
        "trace_name": Path(trace).name,
        **{k: point.get(k, d) for k, (_, d) in RUN_FIELDS.items() if k not in PATH_FIELDS + ("mode",)},
    }
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
