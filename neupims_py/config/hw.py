"""The hardware configuration: NPU, HBM memory (geometry, timing, controller, PIM, power),
system, and the serving loop's scheduler.

Frozen, slotted dataclasses with one help text and unit per field; every derived value is
a property, so ``dataclasses.replace`` never leaves one stale. Construction validates (see
``schema.check_fields`` and the cross-field checks below), so a ``HwConfig`` that exists is
a consistent one. Load them from YAML with ``neupims_py.config.load_hw``.

Memory timings are in memory-clock cycles (tCK = 1000 / memory.clock_mhz ns); NPU latencies
in NPU-clock cycles. Field names follow DRAMsim3's ini keys where one exists.
"""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from neupims_py.config.schema import ConfigError, check_fields, spec

# Address-mapping field names, in the order DRAMsim3's Address holds them.
ADDRESS_FIELDS = ("ch", "ra", "bg", "ba", "ro", "co")


def _cycles(help: str, **kw) -> dataclasses.Field:
    return spec(help, "cycles", minimum=0, **kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class Geometry:
    """The organisation of one HBM/DRAM channel, and how many channels there are."""

    channels: int = spec("independent memory channels", "channels", power_of_two=True)
    ranks: int = spec("ranks sharing the bus of a channel", "ranks",
                      power_of_two=True)
    bankgroups: int = spec("bank groups per rank", "bank groups", power_of_two=True)
    banks_per_group: int = spec("banks per bank group", "banks", power_of_two=True)
    rows: int = spec("rows per bank", "rows", power_of_two=True)
    columns: int = spec(
        "columns per row of one device, as the datasheet (and DRAMsim3's ini) counts them",
        "columns", power_of_two=True)
    device_width_bits: int = spec("data width of one device", "bits", power_of_two=True)
    bus_width_bits: int = spec("data bus width of a channel", "bits", power_of_two=True)
    burst_length: int = spec("beats per access (BL); the bus moves two beats per cycle", "beats",
                             power_of_two=True, minimum=2)
    prefetch: int = spec(
        "bits per column = device_width_bits * prefetch; DRAMsim3 doubles HBM columns, so its "
        "HBM2_8Gb_x128 preset is prefetch 2, while the NeuPIMs artifact (NewtonSim) is 1",
        "", default=1, power_of_two=True)
    channel_size_mib: int = spec(
        "capacity of one channel; must equal ranks * banks * rows * page_bytes * "
        "devices_per_rank", "MiB", minimum=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.bus_width_bits < self.device_width_bits:
            raise ConfigError(
                f"must be a multiple of device_width_bits ({self.device_width_bits}), "
                f"got {self.bus_width_bits}", field="bus_width_bits",
                related=("device_width_bits",))
        if self.columns * self.prefetch < self.burst_length:
            raise ConfigError(
                f"a row ({self.columns} columns * prefetch {self.prefetch}) is shorter than one "
                f"burst ({self.burst_length} beats)", field="burst_length",
                related=("columns", "prefetch"))
        computed = self.ranks * self.banks * self.rows * self.page_bytes * self.devices_per_rank
        declared = self.channel_size_mib * 2**20
        if computed != declared:
            raise ConfigError(
                "geometry does not add up to the declared capacity: ranks "
                f"{self.ranks} * banks {self.banks} * rows {self.rows} * page {self.page_bytes} B "
                f"* devices_per_rank {self.devices_per_rank} = {computed / 2**20:.12g} MiB, but "
                f"channel_size_mib is {self.channel_size_mib}", field="channel_size_mib",
                related=("ranks", "bankgroups", "banks_per_group", "rows", "columns",
                         "device_width_bits", "bus_width_bits", "prefetch"))

    @property
    def banks(self) -> int:
        """Banks per rank."""
        return self.bankgroups * self.banks_per_group

    @property
    def banks_per_channel(self) -> int:
        return self.ranks * self.banks

    @property
    def devices_per_rank(self) -> int:
        return self.bus_width_bits // self.device_width_bits

    @property
    def page_bytes(self) -> int:
        """Row-buffer size of one device (DRAMsim3's page_size)."""
        return self.columns * self.device_width_bits // 8 * self.prefetch

    @property
    def row_bytes(self) -> int:
        """Bytes in one row across the devices of a rank (= page_bytes for HBM)."""
        return self.page_bytes * self.devices_per_rank

    @property
    def burst_bytes(self) -> int:
        """Bytes moved by one read or write (DRAMsim3's request_size_bytes)."""
        return self.bus_width_bits // 8 * self.burst_length

    @property
    def bursts_per_row(self) -> int:
        """Column accesses that cover one row of a rank (= page_bytes / burst_bytes for HBM)."""
        return self.row_bytes // self.burst_bytes

    @property
    def channel_bytes(self) -> int:
        return self.channel_size_mib * 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """DRAM timing constraints, all in memory-clock cycles; every one must be given.

    In YAML, ``tRCD`` is accepted as shorthand for tRCDRD and tRCDWR when those are absent.
    """

    # YAML-only keys that set several fields: (key, fields it sets where they are absent).
    SHORTHANDS: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = (
        ("tRCD", ("tRCDRD", "tRCDWR")),
    )

    CL: int = _cycles("CAS (read) latency")
    CWL: int = _cycles("CAS write latency")
    AL: int = _cycles("additive latency")
    tRCDRD: int = _cycles("ACT to READ, same bank")
    tRCDWR: int = _cycles("ACT to WRITE, same bank")
    tRP: int = _cycles("PRE to ACT, same bank")
    tRAS: int = _cycles("ACT to PRE, same bank")
    tRC: int = _cycles("ACT to ACT, same bank (DRAMsim3 computes tRAS + tRP)")
    tRRD_S: int = _cycles("ACT to ACT, different bank group")
    tRRD_L: int = _cycles("ACT to ACT, same bank group")
    tWTR_S: int = _cycles("end of write data to READ, different bank group")
    tWTR_L: int = _cycles("end of write data to READ, same bank group")
    tFAW: int = _cycles("window in which at most four ACTs may issue to one rank")
    tWR: int = _cycles("write recovery: end of write data to PRE")
    tRTP: int = _cycles("READ to PRE")
    tCCD_S: int = _cycles("column command to column command, different bank group")
    tCCD_L: int = _cycles("column command to column command, same bank group")
    tRTRS: int = _cycles("rank-to-rank switch on the data bus")
    tRFC: int = _cycles("all-bank REF to ACT")
    tREFI: int = _cycles("interval between all-bank refreshes of a rank")
    tREFIb: int = _cycles("interval between per-bank refreshes")
    tRFCb: int = _cycles("per-bank REF to ACT")
    tPPD: int = _cycles("PRE to PRE (LPDDR4/GDDR; 0 for HBM)")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def RL(self) -> int:
        """Read latency: READ to first data beat."""
        return self.CL + self.AL

    @property
    def WL(self) -> int:
        """Write latency: WRITE to first data beat."""
        return self.CWL + self.AL


QUEUE_STRUCTURES = ("per-bank", "per-rank")
ROW_BUFFER_POLICIES = ("open-page", "close-page")
REFRESH_POLICIES = ("rank-staggered", "rank-simultaneous", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerConfig:
    """The memory controller of one channel (DRAMsim3's [system] controller keys)."""

    queue_structure: str = spec("one command queue per bank or per rank", "",
                                choices=QUEUE_STRUCTURES)
    cmd_queue_size: int = spec("entries of each command queue", "commands", minimum=1)
    trans_queue_size: int = spec("entries of the read transaction queue", "transactions",
                                 minimum=1)
    write_buffer_size: int = spec(
        "entries of the write buffer; DRAMsim3 and NewtonSim size it with trans_queue_size "
        "(their write_buf_size key is read but unused)", "transactions", minimum=1)
    row_buffer_policy: str = spec("keep rows open after an access, or auto-precharge", "",
                                  choices=ROW_BUFFER_POLICIES)
    refresh_policy: str = spec(
        "rank-staggered: ranks refresh tREFI/ranks apart; rank-simultaneous: all at once; "
        "off: no refresh", "", choices=REFRESH_POLICIES)
    row_hit_cap: int = spec(
        "row hits served from an open row before a pending conflict may precharge it "
        "(DRAMsim3 hard-codes 4)", "hits", default=4, minimum=1)
    write_drain_threshold: int = spec(
        "a write drain starts when more than this many writes wait and the command queues "
        "are empty, or when the write buffer is full (DRAMsim3 hard-codes 8)", "writes",
        default=8, minimum=0)
    dual_command_issue: bool = spec(
        "HBM: issue one row and one column command in the same cycle (DRAMsim3 "
        "hbm_dual_cmd); never with a PIM command")
    address_mapping: str = spec(
        "order of the address fields ch ra bg ba ro co, most significant first, below the "
        "burst offset (DRAMsim3 address_mapping), e.g. rorabgbachco")

    def __post_init__(self) -> None:
        check_fields(self)
        problem = _address_mapping_problem(self.address_mapping)
        if problem:
            raise ConfigError(
                "expected 6 two-letter fields using each of ch ra bg ba ro co exactly once, "
                f"most significant first (e.g. 'rorabgbachco'); got {self.address_mapping!r}: "
                f"{problem}", field="address_mapping")

    @property
    def mapping_fields(self) -> tuple[str, ...]:
        """The address_mapping split into its six fields, most significant first."""
        m = self.address_mapping
        return tuple(m[i:i + 2] for i in range(0, len(m), 2))


def _address_mapping_problem(mapping: str) -> str:
    if len(mapping) != 12:
        return f"{len(mapping)} characters instead of 12"
    parts = [mapping[i:i + 2] for i in range(0, 12, 2)]
    unknown = [p for p in parts if p not in ADDRESS_FIELDS]
    if unknown:
        return "unknown field " + ", ".join(repr(p) for p in unknown)
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    missing = [f for f in ADDRESS_FIELDS if f not in parts]
    return f"{', '.join(repeated)} repeated, {', '.join(missing)} missing" if repeated else ""


ROW_BUFFERS = ("single", "dual")


@dataclass(frozen=True, slots=True, kw_only=True)
class PimConfig:
    """Newton/AiM-style PIM in every channel (NeuPIMs). Timings in memory-clock cycles."""

    enabled: bool = spec("the memory has PIM units (GWRITE, G_ACT, COMP, READRES commands)")
    row_buffers: str = spec(
        "single: a channel in PIM mode issues no normal DRAM command (Newton, npu+pim); "
        "dual: a separate PIM row buffer lets normal reads/writes proceed (NeuPIMs)", "",
        choices=ROW_BUFFERS)
    multipliers_per_bank: int = spec(
        "FP16 multipliers per bank: elements one COMP multiplies per bank (artifact "
        "pim_comp_coverage)", "multipliers", minimum=1)
    global_buffer_bytes: int = spec(
        "per-channel global buffer holding the vector chunk that COMPs multiply against",
        "bytes", minimum=1)
    tGWRITE: int = _cycles(
        "GWRITE: a row's chunk into the global buffer; artifact gwrite_delay = "
        "(tCCD_S + tCCD_L) * 32 = 96", default=96)
    tCOMP: int = spec("issue interval of COMP commands on one channel", "cycles", default=2,
                      minimum=1)
    tREADRES: int = _cycles(
        "READRES (and COMPS_READRES) issue to results back; the artifact returns them after "
        "read_delay = CL + AL + burst_length / 2 = 16", default=16)
    comps_readres_min_k: int = spec(
        "COMPS_READRES with k COMPs occupies the channel for 2 * (max(k, this) + 1) cycles",
        "COMPs", default=6, minimum=1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerConfig:
    """DRAM supply voltage and IDD currents, for DRAMsim3's energy model.

    Defaults: the NeuPIMs artifact's HBM2_8Gb_x128_dualpim.ini (= DRAMsim3's HBM2_8Gb_x128).
    """

    VDD: float = spec("supply voltage", "V", default=1.2, minimum=0)
    IDD0: float = spec("one-bank ACT-PRE current", "mA", default=65.0, minimum=0)
    IDD2P: float = spec("precharge power-down current", "mA", default=28.0, minimum=0)
    IDD2N: float = spec("precharge standby current", "mA", default=40.0, minimum=0)
    IDD3P: float = spec("active power-down current", "mA", default=40.0, minimum=0)
    IDD3N: float = spec("active standby current", "mA", default=55.0, minimum=0)
    IDD4W: float = spec("burst write current", "mA", default=500.0, minimum=0)
    IDD4R: float = spec("burst read current", "mA", default=390.0, minimum=0)
    IDD5AB: float = spec("all-bank refresh current", "mA", default=250.0, minimum=0)
    IDD5PB: float = spec("per-bank refresh current (DRAMsim3 default; not in the HBM2 ini)",
                         "mA", default=5.0, minimum=0)
    IDD6x: float = spec("self-refresh current", "mA", default=31.0, minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)


PROTOCOLS = ("HBM2", "HBM", "DDR4")


class AddressField(NamedTuple):
    """Where one field sits in a byte address: ``(addr >> shift) & mask``."""

    shift: int
    mask: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryConfig:
    """The memory system: protocol, clock, and per-channel geometry, timing, controller, PIM."""

    protocol: str = spec("DRAM standard; HBM and HBM2 behave alike (as in DRAMsim3)", "",
                         choices=PROTOCOLS)
    clock_mhz: float = spec("memory command clock (tCK = 1000 / clock_mhz ns)", "MHz",
                            minimum=1)
    geometry: Geometry = spec("channel organisation and capacity")
    timing: Timing = spec("timing constraints, in memory-clock cycles")
    controller: ControllerConfig = spec("memory controller of each channel")
    pim: PimConfig = spec("processing-in-memory units")
    power: PowerConfig = spec("currents for the energy model", default_factory=PowerConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.controller.dual_command_issue and not self.protocol.startswith("HBM"):
            raise ConfigError(f"dual command issue is an HBM feature, the protocol is "
                              f"{self.protocol}; set it to false",
                              field="controller.dual_command_issue", related=("protocol",))

    @property
    def tck_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    @property
    def burst_cycles(self) -> int:
        """Cycles one burst occupies the data bus (two beats per cycle)."""
        return self.geometry.burst_length // 2

    @property
    def read_delay(self) -> int:
        """READ issue to the last data beat (DRAMsim3's read_delay)."""
        return self.timing.RL + self.burst_cycles

    @property
    def write_delay(self) -> int:
        """WRITE issue to the last data beat (DRAMsim3's write_delay)."""
        return self.timing.WL + self.burst_cycles

    @property
    def capacity_bytes(self) -> int:
        """Capacity of the whole memory, all channels."""
        return self.geometry.channels * self.geometry.channel_bytes

    @property
    def address_fields(self) -> dict[str, AddressField]:
        """For each of ch ra bg ba ro co, its (shift, mask) in a byte address.

        As DRAMsim3's Config::SetAddressMapping: the low log2(burst_bytes) bits address bytes
        within a burst; above them the fields are laid out from the last two letters of
        address_mapping (least significant) to the first.
        """
        g = self.geometry
        widths = {
            "ch": g.channels.bit_length() - 1,
            "ra": g.ranks.bit_length() - 1,
            "bg": g.bankgroups.bit_length() - 1,
            "ba": g.banks_per_group.bit_length() - 1,
            "ro": g.rows.bit_length() - 1,
            # A column address counts device columns; one burst covers burst_length of them.
            "co": (g.columns * g.prefetch).bit_length() - g.burst_length.bit_length(),
        }
        pos = g.burst_bytes.bit_length() - 1
        shifts = {}
        for name in reversed(self.controller.mapping_fields):
            shifts[name] = pos
            pos += widths[name]
        return {n: AddressField(shifts[n], (1 << widths[n]) - 1) for n in ADDRESS_FIELDS}

    def decode_address(self, addr: int) -> dict[str, int]:
        """The channel, rank, bank group, bank, row and column of a byte address."""
        return {n: (addr >> f.shift) & f.mask for n, f in self.address_fields.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorOpCycles:
    """Latency of one vector-unit operation on a vector_width-wide operand, in NPU cycles."""

    add: int = spec("element-wise add", "cycles", minimum=0)
    mul: int = spec("element-wise multiply", "cycles", minimum=0)
    exp: int = spec("element-wise exponential", "cycles", minimum=0)
    gelu: int = spec("element-wise GELU", "cycles", minimum=0)
    add_tree: int = spec("reduction of one vector to a scalar", "cycles", minimum=0)
    sqrt: int = spec("scalar square root", "cycles", minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)


DATAFLOWS = ("weight-stationary",)


@dataclass(frozen=True, slots=True, kw_only=True)
class NpuConfig:
    """The NPU: systolic arrays, vector units and on-chip SRAM."""

    clock_mhz: float = spec("NPU clock", "MHz", minimum=1)
    systolic_arrays: int = spec("systolic arrays working in parallel", "arrays", minimum=1)
    array_rows: int = spec("processing-element rows of one systolic array", "PEs", minimum=1)
    array_cols: int = spec("processing-element columns of one systolic array", "PEs", minimum=1)
    dataflow: str = spec("systolic array dataflow", "", choices=DATAFLOWS)
    precision_bytes: int = spec("bytes per activation/weight element (2 = FP16)", "bytes",
                                minimum=1)
    vector_units: int = spec("vector units working in parallel", "units", minimum=1)
    vector_width: int = spec("lanes of one vector unit", "elements", minimum=1)
    vector_op_cycles: VectorOpCycles = spec("latency of each vector operation")
    scratchpad_kib: int = spec(
        "scratchpad SRAM for weights and activations, both halves of the double buffer",
        "KiB", minimum=1)
    accumulator_kib: int = spec(
        "accumulator SRAM for partial sums, both halves of the double buffer", "KiB", minimum=1)
    double_buffered: bool = spec("SRAM is split in two halves: load one while computing on the "
                                 "other")
    energy_pj_per_mac: float = spec(
        "energy of one FP16 multiply-accumulate (Horowitz, ISSCC 2014, 45 nm: FP16 multiply "
        "1.1 pJ + add 0.4 pJ)", "pJ", default=1.5, minimum=0)
    energy_pj_per_sram_byte: float = spec(
        "energy per byte read or written in SRAM (Horowitz, ISSCC 2014, 45 nm: 10 pJ per "
        "64-bit access of an 8 KB SRAM)", "pJ", default=1.25, minimum=0)

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def macs_per_cycle(self) -> int:
        return self.systolic_arrays * self.array_rows * self.array_cols


MODES = ("npu-only", "npu+pim", "neupims")


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemConfig:
    """Which of the three systems runs (DESIGN.md, 'The three systems')."""

    mode: str = spec("npu-only: attention on the NPU; npu+pim: decode attention on PIM; "
                     "neupims: PIM with dual row buffers and sub-batch interleaving", "",
                     choices=MODES)
    sub_batch_interleaving: bool = spec(
        "split the batch in two sub-batches that alternate between NPU and PIM (NeuPIMs)")
    sub_batch_threshold: int = spec(
        "batch size from which sub-batch interleaving is used", "requests", minimum=1)

    def __post_init__(self) -> None:
        check_fields(self)


SCHEDULER_POLICIES = ("orca", "chunked")
CHANNEL_POLICIES = ("round-robin", "min-load", "random")
CHANNEL_FULL_POLICIES = ("wait", "migrate")


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """The serving loop: batching policy, admission limits and KV placement (DESIGN.md,
    'The serving loop'). A limit of 0 means "derived" or "none", as each field says."""

    policy: str = spec(
        "orca: iteration-level batching, a prompt is prefilled whole in one iteration; "
        "chunked: prompts are split into chunks that fill each iteration's token budget "
        "(max_batch_tokens) left over by the decodes", "", default="orca",
        choices=SCHEDULER_POLICIES)
    max_batch_size: int = spec("requests in one iteration's batch (prefills and decodes)",
                               "requests", default=256, minimum=1)
    max_batch_tokens: int = spec(
        "tokens in one iteration: one per decode plus every prefill (or chunk) token",
        "tokens", default=2048, minimum=1)
    max_total_tokens: int = spec(
        "KV capacity across the running batch: the sum over admitted requests of their "
        "prompt + history + output tokens (reserved at admission); 0: derived from the "
        "memory left after the weights (channels x free rows per bank / KV rows per token)",
        "tokens", default=0, minimum=0)
    max_request_tokens: int = spec(
        "history + prompt + output tokens of one request; 0: what one channel's free rows "
        "hold (a request's KV cache lives in one channel)", "tokens", default=0, minimum=0)
    max_prompt_tokens: int = spec(
        "history + prompt tokens of one request; 0: no limit of its own (orca still needs "
        "the prompt to fit max_batch_tokens)", "tokens", default=0, minimum=0)
    channel_policy: str = spec(
        "PIM channel of a new request's KV cache: round-robin; min-load (the channel with "
        "the least estimated attention work: NeuPIMs' per-request MHA estimate summed; ties to "
        "the lowest channel); random (uniform, from the run's seed)", "", default="min-load",
        choices=CHANNEL_POLICIES)
    channel_full: str = spec(
        "when the chosen channel has too few free KV rows: wait (the request, and every "
        "later one, waits until rows free up there; FCFS) or migrate (it goes to the "
        "channel with the most free rows instead, if that one has room)", "",
        default="wait", choices=CHANNEL_FULL_POLICIES)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class HwConfig:
    """The whole accelerator: NPU, memory with PIM, and the system mode."""

    name: str = spec("short name of this configuration")
    description: str = spec("what this configuration is for", default="")
    source: str = spec("paper, datasheet or ini file the values come from", default="")
    memory: MemoryConfig = spec("memory system")
    npu: NpuConfig = spec("NPU")
    system: SystemConfig = spec("system mode")
    scheduler: SchedulerConfig = spec("serving loop: batching, admission limits, KV placement",
                                      default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.system.mode != "npu-only" and not self.memory.pim.enabled:
            raise ConfigError(f"mode {self.system.mode} runs attention on PIM, but "
                              "memory.pim.enabled is false", field="system.mode",
                              related=("memory.pim.enabled",))
