"""Energy of an iteration: DRAM and PIM from command counts, NPU from MACs and SRAM traffic.

DRAM (DRAMsim3, src/configuration.cc, `Config::InitPowerParams`; currents in mA, V, and
cycles of tCK ns, so V * mA * ns = pJ), per command, times the devices of a rank:

    ACT      VDD * (IDD0 * tRC - (IDD3N * tRAS + IDD2N * tRP))
    RD       VDD * (IDD4R - IDD3N) * burst_cycles
    WR       VDD * (IDD4W - IDD3N) * burst_cycles
    REF      VDD * (IDD5AB - IDD3N) * tRFC
    background, per rank and cycle: VDD * IDD3N with a bank open, VDD * IDD2N otherwise.

PIM (NewtonSim, as the NeuPIMs artifact extends DRAMsim3: extern/NewtonSim/src/
configuration.cc, "power parameters related to PIM"; the Newton paper's 4x for a command
that drives all banks):

    GWRITE   (page bits / access bits) x RD
    G_ACT    4 x ACT                      (the 4 banks of a bank group)
    COMP     4 x RD                       (every COMP, also those inside COMPS_READRES)
    READRES  16 * banks * devices * ranks / access bits x RD   (also for COMPS_READRES)

NPU: `npu.energy_pj_per_mac` per multiply-accumulate (weight GEMMs of every token, and the
attention the NPU runs: Q.K^T and S.V) and `npu.energy_pj_per_sram_byte` per byte through
the scratchpad: every weight byte written once and read once, every GEMM's activations
read and its outputs written, and the attention operands (Q, K, V in, scores out and in).
"""

from __future__ import annotations

from dataclasses import dataclass

from neupims_py.formats import Stat

ENERGY_PARTS = ("dram_act", "dram_rw", "dram_ref", "dram_background", "pim", "npu_mac", "npu_sram")


@dataclass(frozen=True)
class EnergyModel:
    """Per-command and per-cycle energies (pJ) of a hardware configuration and a model."""

    act: float
    read: float
    write: float
    ref: float
    act_standby: float  # per rank-cycle
    pre_standby: float
    gwrite: float
    g_act: float
    comp: float
    readres: float
    mac: float
    sram_byte: float
    ranks: int  # ranks in the whole memory
    mem_per_npu_cycle: float  # memory cycles per NPU cycle
    layers: int
    weight_params: int  # per layer, one shard
    gemm_io: int  # per layer and token: sum over weight matrices of (rows + cols)
    heads: int
    head_dim: int
    dtype_bytes: int

    @classmethod
    def of(cls, hw, model) -> "EnergyModel":
        mem, g, t, pw = hw.memory, hw.memory.geometry, hw.memory.timing, hw.memory.power
        dev = g.devices_per_rank * mem.tck_ns
        act = pw.VDD * (pw.IDD0 * t.tRC - (pw.IDD3N * t.tRAS + pw.IDD2N * t.tRP)) * dev
        read = pw.VDD * (pw.IDD4R - pw.IDD3N) * mem.burst_cycles * dev
        access_bits = g.burst_length * g.bus_width_bits
        page_bits = g.columns * g.device_width_bits
        mats = model.weight_matrices()
        return cls(
            act=act,
            read=read,
            write=pw.VDD * (pw.IDD4W - pw.IDD3N) * mem.burst_cycles * dev,
            ref=pw.VDD * (pw.IDD5AB - pw.IDD3N) * t.tRFC * dev,
            act_standby=pw.VDD * pw.IDD3N * dev,
            pre_standby=pw.VDD * pw.IDD2N * dev,
            gwrite=page_bits / access_bits * read,
            g_act=4 * act,
            comp=4 * read,
            readres=16 * g.banks * g.devices_per_rank * g.ranks / access_bits * read,
            mac=hw.npu.energy_pj_per_mac,
            sram_byte=hw.npu.energy_pj_per_sram_byte,
            ranks=g.channels * g.ranks,
            mem_per_npu_cycle=mem.clock_mhz / hw.npu.clock_mhz,
            layers=model.layers_per_stage,
            weight_params=model.params_per_shard_per_layer(),
            gemm_io=sum(w.rows + w.cols for w in mats),
            heads=model.heads_per_shard,
            head_dim=model.head_dim,
            dtype_bytes=model.dtype_bytes,
        )

    def iteration(self, cost, batch, pim_attention: bool) -> dict[str, float]:
        """Energy (pJ) of one iteration by part, from its counters and its batch."""
        s = cost.stats
        rank_cycles = cost.cycles * self.mem_per_npu_cycle * self.ranks
        active = min(float(s[Stat.RANK_ACTIVE_CYCLES]), rank_cycles)
        T = sum(e.q_len for e in batch)
        macs = T * self.weight_params
        attn_bytes = 0
        for e in batch:
            if e.q_len > 1 or not pim_attention:
                kvn = e.kv_len + e.q_len
                macs += 2 * e.q_len * kvn * self.head_dim * self.heads
                attn_bytes += self.heads * (e.q_len * self.head_dim + 2 * kvn * self.head_dim + 2 * e.q_len * kvn)
        sram = 2 * self.weight_params + T * self.gemm_io + attn_bytes
        return {
            "dram_act": float(s[Stat.ACT]) * self.act,
            "dram_rw": float(s[Stat.RD] + s[Stat.RDA]) * self.read + float(s[Stat.WR] + s[Stat.WRA]) * self.write,
            "dram_ref": float(s[Stat.REF]) * self.ref,
            "dram_background": active * self.act_standby + (rank_cycles - active) * self.pre_standby,
            "pim": (float(s[Stat.GWRITE]) * self.gwrite + float(s[Stat.G_ACT]) * self.g_act
                    + float(s[Stat.PIM_COMPS]) * self.comp
                    + float(s[Stat.READRES] + s[Stat.COMPS_READRES]) * self.readres),
            "npu_mac": float(macs * self.layers) * self.mac,
            "npu_sram": float(sram * self.dtype_bytes * self.layers) * self.sram_byte,
        }
