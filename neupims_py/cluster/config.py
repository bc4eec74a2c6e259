"""The `cluster:` section of a YAML file: device pools, their roles, the link between devices,
and how requests are routed; loaded into frozen dataclasses, every mistake a UserError
naming the file and the field.

    cluster:
      name: disagg-1p2d
      link: {bandwidth_gbps: 64, latency_us: 2}   # between pools, and between pp stages
      arrival_routing: round-robin                 # arrivals over the entry devices
      decode_routing: least-kv                     # prefill -> decode hand-off
      kv_overlap: false                            # true: KV leaves layer by layer
      pools:
        - {name: prefill, hw: npu-only, count: 1, role: prefill, cost_per_hour: 2.0}
        - {name: decode, hw: neupims, count: 2, role: decode, cost_per_hour: 2.5,
           params: [scheduler.max_batch_size=64]}

A pool's `hw` is a hardware preset name or a YAML path (relative to the cluster file);
`params` are `key=value` overrides of it, as `-p` gives them to `neupims-sim run`.
The shapes allowed: one or more `mixed` pools (every device serves whole requests), or
exactly one `prefill` pool and one `decode` pool (disaggregated serving). A pool with
`pp: N` groups its `count` devices into count / N pipeline replicas of N stages (a
`stage_link`, else `link`, between stages); all devices must share one NPU clock.
"""

# No `from __future__ import annotations`: check_fields reads the field types.
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from neupims_py.cluster.routing import ROUTING_POLICIES
from neupims_py.config import load_hw, presets_dir
from neupims_py.config.loader import parse_yaml  # the project's strict YAML reading
from neupims_py.config.schema import ConfigError, check_fields, spec
from neupims_py.errors import UserError

ROLES = ("mixed", "prefill", "decode")
CLUSTER_KEY = "cluster"


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """A point-to-point link: transfers on one link are serialized by its bandwidth; the
    latency is added to each transfer (it does not occupy the link)."""

    bandwidth_gbps: float = spec("bandwidth of one link", "GB/s (1e9 bytes per second)", minimum=1e-9)
    latency_us: float = spec("latency added to every transfer", "us", default=0.0, minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """A pool of identical devices with one role."""

    name: str = spec("name of the pool, used in results (devices are NAME.0, NAME.1, ...)")
    hw: str = spec("hardware configuration of every device: a preset name (neupims, npu-only, "
                   "npu-pim, ...) or a YAML file path, relative to the cluster file")
    count: int = spec("devices in the pool (with pp > 1: pp devices per pipeline replica)",
                      "devices", default=1, minimum=1)
    role: str = spec("mixed: a device prefills and decodes whole requests; prefill: prompts "
                     "only, the KV cache then moves to a decode device; decode: decodes of "
                     "requests prefilled elsewhere", "", default="mixed", choices=ROLES)
    pp: int = spec("pipeline-parallel stages: the model's layers split over pp devices, "
                   "micro-batches flowing from stage to stage", "stages",
                   default=1, minimum=1)
    micro_batches: int = spec("micro-batches an iteration's batch is split into with pp > 1 "
                              "(GPipe schedule)", "micro-batches", default=1, minimum=1)
    routing: str = spec("how requests are spread over the pool's replicas: arrivals for "
                        "mixed and prefill pools, KV hand-offs for a decode pool (overrides "
                        "cluster.decode_routing); empty: the cluster's", "", default="")
    cost_per_hour: float = spec("price of one device for one hour", "$ per device-hour",
                                default=0.0, minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.routing and self.routing not in ROUTING_POLICIES:
            close = difflib.get_close_matches(self.routing, list(ROUTING_POLICIES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"expected one of [{', '.join(ROUTING_POLICIES)}], got "
                              f"{self.routing!r}{hint}", field="routing")
        if self.count % self.pp:
            raise ConfigError(f"count {self.count} is not a multiple of pp {self.pp} (each "
                              "pipeline replica needs pp devices)", field="count", related=("pp",))

    @property
    def replicas(self) -> int:
        return self.count // self.pp


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterHeader:
    """The scalar fields of the cluster section."""

    name: str = spec("short name of this cluster configuration", default="cluster")
    description: str = spec("what this configuration is for", default="")
    arrival_routing: str = spec("how arrivals are spread over the devices of the mixed pools "
                                "or the prefill pool (a pool's own routing wins)", "",
                                default="round-robin", choices=tuple(ROUTING_POLICIES))
    decode_routing: str = spec("which decode device a prefilled request's KV cache goes to",
                               "", default="least-kv", choices=tuple(ROUTING_POLICIES))
    kv_overlap: bool = spec(
        "send a request's KV cache layer by layer during the iteration that completes its "
        "prefill (layer l's K/V ready after (l+1)/layers of the iteration), when the decode "
        "device has room for it as that iteration starts; false (or no room): the transfer "
        "starts after the prefill", default=False)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class Pool:
    """A validated pool: its settings, overrides and resolved hardware."""

    index: int
    cfg: PoolConfig
    params: tuple[str, ...]
    hw: object  # HwConfig
    stage_link: LinkConfig | None
    routing: str  # the policy in force


@dataclass(frozen=True)
class ClusterConfig:
    path: str
    header: ClusterHeader
    pools: tuple[Pool, ...]
    link: LinkConfig | None

    @property
    def disaggregated(self) -> bool:
        return any(p.cfg.role == "prefill" for p in self.pools)

    def pools_of(self, role: str) -> list[Pool]:
        return [p for p in self.pools if p.cfg.role == role]


# ---------------------------------------------------------------------- reading


def _cluster_path(path: str | Path) -> Path | None:
    """The file `path` names: itself, or a shipped file of hwconfigs/ by bare name."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix == "" and "/" not in str(path) and "\\" not in str(path):
        candidate = presets_dir() / f"{path}.yaml"
        if candidate.is_file():
            return candidate
    return None


def read_cluster_tree(path: str | Path) -> dict | None:
    """The top-level mapping of `path` when it has a `cluster:` section, else None (a
    single-device hardware file, or a preset name)."""
    p = _cluster_path(path)
    if p is None:
        return None
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # the single-device loader reports it
    data = parse_yaml(text, str(path))
    if isinstance(data, dict) and CLUSTER_KEY in data:
        return data
    return None


def is_cluster_file(path: str | Path) -> bool:
    return read_cluster_tree(path) is not None


def _unknown(key, valid, where: str, source: str) -> UserError:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"unknown key{hint}; valid keys of {where}: {', '.join(valid)}",
                     path=source, field=f"{where}.{key}" if where != "the top level" else str(key))


def _mapping(value, field: str, source: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"expected a mapping, got {value!r}", path=source, field=field)
    return value


def _make(cls, data: dict, field: str, source: str, extra: tuple = ()):
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names and key not in extra:
            raise _unknown(key, [*names, *extra], field, source)
    kwargs = {k: v for k, v in data.items() if k in names}
    for f in dataclasses.fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING:
            raise UserError(f"missing required field: {f.metadata['help']}", path=source,
                            field=f"{field}.{f.name}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.within(field, source) from None


def load_cluster(path: str | Path, model) -> ClusterConfig:
    """Read and validate the cluster file `path` for `model` (ModelConfig: pp must divide
    its layers)."""
    source = str(path)
    tree = read_cluster_tree(path)
    if tree is None:
        raise UserError("no 'cluster:' section", path=source)
    for key in tree:
        if key != CLUSTER_KEY:
            raise _unknown(key, [CLUSTER_KEY], "the top level", source)
    data = dict(_mapping(tree[CLUSTER_KEY], CLUSTER_KEY, source))
    pools_raw = data.pop("pools", None)
    link_raw = data.pop("link", None)
    header = _make(ClusterHeader, data, CLUSTER_KEY, source, extra=("pools", "link"))
    if not isinstance(pools_raw, list) or not pools_raw:
        raise UserError("expected a non-empty list of pools (each a mapping with name, hw, "
                        "count, role, ...)", path=source, field="cluster.pools")
    link = None
    if link_raw is not None:
        link = _make(LinkConfig, _mapping(link_raw, "cluster.link", source), "cluster.link", source)
    base = _cluster_path(path).resolve().parent
    pools = []
    names = set()
    for i, raw in enumerate(pools_raw):
        where = f"cluster.pools[{i}]"
        raw = dict(_mapping(raw, where, source))
        params = raw.pop("params", [])
        stage_raw = raw.pop("stage_link", None)
        cfg = _make(PoolConfig, raw, where, source, extra=("params", "stage_link"))
        if cfg.name in names:
            raise UserError(f"pool name {cfg.name!r} used twice; give each pool its own name",
                            path=source, field=f"{where}.name")
        names.add(cfg.name)
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise UserError("expected a list of key=value strings, e.g. "
                            "[scheduler.max_batch_size=64]", path=source, field=f"{where}.params")
        stage_link = None
        if stage_raw is not None:
            stage_link = _make(LinkConfig, _mapping(stage_raw, f"{where}.stage_link", source),
                               f"{where}.stage_link", source)
        hw = _load_pool_hw(cfg.hw, base, params, source, where)
        if cfg.pp > 1:
            if model.layers % cfg.pp:
                raise UserError(f"pp {cfg.pp} does not divide the {model.layers} layers of "
                                f"{model.name}; use a divisor of {model.layers}",
                                path=source, field=f"{where}.pp")
            if stage_link is None and link is None:
                raise UserError("pp > 1 moves activations between stages: give "
                                f"{where}.stage_link or cluster.link (bandwidth_gbps, "
                                "latency_us)", path=source, field=f"{where}.stage_link")
        if cfg.micro_batches > 1 and cfg.pp == 1:
            raise UserError("micro_batches only applies with pp > 1; remove it or set pp",
                            path=source, field=f"{where}.micro_batches")
        routing = cfg.routing or (header.decode_routing if cfg.role == "decode" else header.arrival_routing)
        pools.append(Pool(i, cfg, tuple(params), hw, stage_link or link, routing))
    roles = [p.cfg.role for p in pools]
    n_pre, n_dec, n_mix = roles.count("prefill"), roles.count("decode"), roles.count("mixed")
    if n_pre or n_dec:
        if n_pre != 1 or n_dec != 1:
            missing = "decode" if n_dec == 0 else "prefill" if n_pre == 0 else None
            msg = (f"a prefill pool needs a decode pool to hand its requests to (and the other "
                   f"way round): add a pool with role: {missing}" if missing else
                   "give exactly one prefill pool and one decode pool (more devices: raise count)")
            raise UserError(msg, path=source, field="cluster.pools")
        if n_mix:
            raise UserError("mixed pools cannot be combined with prefill/decode pools: either "
                            "every pool is mixed, or one prefill and one decode pool",
                            path=source, field="cluster.pools")
        if header.kv_overlap and pools[0 if roles[0] == "prefill" else 1].cfg.pp > 1:
            raise UserError("kv_overlap needs a prefill pool without pp (its stages finish "
                            "their layers at different times); set kv_overlap: false or pp: 1",
                            path=source, field="cluster.kv_overlap")
        if link is None:
            raise UserError("a disaggregated cluster moves KV caches from prefill to decode "
                            "devices: add cluster.link with bandwidth_gbps and latency_us",
                            path=source, field="cluster.link")
    clocks = {p.hw.npu.clock_mhz for p in pools}
    if len(clocks) > 1:
        raise UserError("the pools' devices run at different NPU clocks "
                        f"({', '.join(f'{c:g}' for c in sorted(clocks))} MHz); the cluster runs "
                        "on one clock: set npu.clock_mhz alike (params: [npu.clock_mhz=...])",
                        path=source, field="cluster.pools")
    return ClusterConfig(source, header, tuple(pools), link)


def _load_pool_hw(name: str, base: Path, params, source: str, where: str):
    candidate = base / name
    target = candidate if candidate.is_file() else name
    try:
        return load_hw(target, params)
    except UserError as exc:
        field = "params" if str(exc.path or "").startswith("override") else "hw"
        raise UserError(f"hardware of the pool: {exc}", path=source, field=f"{where}.{field}") from None
