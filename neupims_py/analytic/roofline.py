"""The roofline bound on per-token latency: what no schedule on this hardware can beat.

For one tensor-parallel shard (the device the simulator simulates), with
``L = model.layers_per_stage`` layers, a batch of ``B`` identical requests, prompt ``P`` and
``R`` output tokens (the analyses of "transformer arithmetic" and LLM-simulator papers):

    params  = L * model.params_per_shard_per_layer()    (QKV, projection and FFN matrices;
                                                         embeddings and the LM head are not
                                                         simulated, so not counted)
    W       = params * dtype_bytes                      weight bytes of the shard
    F       = arrays * array_rows * array_cols * 2 * npu_clock       peak FLOP/s
    BW      = channels * bus_width_bits / 8 * 2 * memory_clock       peak bus bytes/s
              (two beats per clock, as the HBM bus moves them)
    BW_pim  = channels * banks_per_channel * multipliers_per_bank * dtype_bytes
              * memory_clock / tCOMP                                 PIM in-bank bytes/s
    KV(n)   = B * 2 * L * d_shard * dtype_bytes * (P + n - 1)        K and V bytes cached
              before decode step n (n >= 1), which that step must read

    latencies[0] (prefill, time to first token)
            = max(2 * params * P * B / F,  W / BW)
    latencies[n], n = 1 .. R-1 (decode step n: token n-1 to token n, counting from 0)
            = max(2 * params * B / F,  t_mem(n))
    t_mem(n) = (W + KV(n)) / BW               npu-only: attention reads K/V over the bus
             = W / BW + KV(n) / BW_pim        npu+pim: a channel in PIM mode issues no
                                              normal command, so bus and PIM time add up
             = max(W / BW, KV(n) / BW_pim)    neupims: dual row buffers overlap them

Every term is a lower bound: attention FLOPs, K/V writes, activations, the dependencies
between layers and the placement of a request's K/V in one channel are left out, so the
cycle-level simulator can only be slower.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Peaks:
    """The hardware and model numbers the roofline is made of (SI units)."""

    params: int  # weights of the simulated shard's layers
    weight_bytes: int
    kv_bytes_per_token: int  # K and V of one token, all layers of the shard
    flops_per_s: float
    bus_bytes_per_s: float
    pim_bytes_per_s: float  # 0 without PIM
    mode: str

    @classmethod
    def of(cls, hw, model) -> Peaks:
        npu, mem = hw.npu, hw.memory
        g = mem.geometry
        params = model.layers_per_stage * model.params_per_shard_per_layer()
        mem_hz = mem.clock_mhz * 1e6
        pim = 0.0
        if mem.pim.enabled:
            pim = (g.channels * g.banks_per_channel * mem.pim.multipliers_per_bank
                   * model.dtype_bytes * mem_hz / mem.pim.tCOMP)
        return cls(
            params=params,
            weight_bytes=params * model.dtype_bytes,
            kv_bytes_per_token=2 * model.layers_per_stage * model.d_shard * model.dtype_bytes,
            flops_per_s=npu.macs_per_cycle * 2 * npu.clock_mhz * 1e6,
            bus_bytes_per_s=g.channels * g.bus_width_bits / 8 * 2 * mem_hz,
            pim_bytes_per_s=pim,
            mode=hw.system.mode,
        )

    def prefill_seconds(self, prompt: int, batch: int) -> float:
        return max(2 * self.params * prompt * batch / self.flops_per_s,
                   self.weight_bytes / self.bus_bytes_per_s)

    def decode_seconds(self, kv_tokens: int, batch: int) -> float:
        """One decode step of `batch` requests, each over `kv_tokens` cached tokens."""
        w = self.weight_bytes / self.bus_bytes_per_s
        kv = batch * kv_tokens * self.kv_bytes_per_token
        if self.mode == "npu-only":
            mem = w + kv / self.bus_bytes_per_s
        elif self.mode == "npu+pim":
            mem = w + kv / self.pim_bytes_per_s
        else:
            mem = max(w, kv / self.pim_bytes_per_s)
        return max(2 * self.params * batch / self.flops_per_s, mem)


def roofline_latencies(hw, model, prompt: int, response: int, batch: int = 1) -> list[float]:
    """Per-token latency bounds in seconds: [prefill, decode step 1, ..., step response-1]."""
    peaks = Peaks.of(hw, model)
    return [peaks.prefill_seconds(prompt, batch)] + [
        peaks.decode_seconds(prompt + n - 1, batch) for n in range(1, response)]
