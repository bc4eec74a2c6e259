"""GEMM timing on the systolic arrays: hand-computed cycles, the kernel against its twin, SRAM.

Every expected value is worked out here from the formulas in neupims_py/npu/gemm.py with
R = C = 128 arrays: fill = R + C - 2 = 254, a pass streams max(rows, 4) cycles, a weight
tile's preload is its K extent.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neupims_py.config import load_hw
from neupims_py.errors import UserError
from neupims_py.model import load_model
from neupims_py.npu import gemm_schedule_reference, gemm_timing, max_m_tile
from neupims_py.npu.kernels import FINISH, STATE_ROWS, gemm_schedule

NPU = load_hw("neupims").npu  # 8 arrays of 128 x 128, double buffered
ONE = dataclasses.replace(NPU, systolic_arrays=1)
FILL = 128 + 128 - 2


def test_one_aligned_tile_on_one_array():
    # preload 128, then 128 + 128 - 2 + 128
    assert gemm_timing(ONE, 128, 128, 128, name="t").cycles == 128 + FILL + 128 == 510


def test_one_tile_uses_one_of_eight_arrays():
    t = gemm_timing(NPU, 128, 128, 128, name="t")
    assert t.cycles == 510
    assert t.array_cycles == (510, 0, 0, 0, 0, 0, 0, 0)
    assert t.tiles == 1 and t.macs == 128**3


def test_sixteen_tiles_over_eight_arrays():
    # K=256, N=1024: 2 x 8 = 16 weight tiles, two per array. Second tile starts at
    # 128 + max(stream 128, preload 128) = 256 and ends 256 + 254 + 128.
    t = gemm_timing(NPU, 128, 256, 1024, name="t")
    assert t.tiles == 16
    assert t.array_cycles == (638,) * 8
    assert t.cycles == 638


def test_non_aligned_on_one_array():
    # M=5, K=200 (tiles of 128 and 72 rows), N=130 (128 and 2 columns), order (n, k):
    #   n0k0: start 128,                 finish 128 + 254 + 5 = 387
    #   n0k1: start 128 + max(5, 72)=200, finish 459
    #   n1k0: start 200 + max(5, 128)=328, finish 587
    #   n1k1: start 328 + 72 = 400,        finish 659
    assert gemm_timing(ONE, 5, 200, 130, name="t").cycles == 659


def test_non_aligned_over_eight_arrays():
    # each of the 4 tiles on its own array: 128 + 254 + 5 = 387 or 72 + 254 + 5 = 331
    t = gemm_timing(NPU, 5, 200, 130, name="t")
    assert t.array_cycles == (387, 331, 387, 331, 0, 0, 0, 0)
    assert t.cycles == 387


def test_a_pass_streams_at_least_four_cycles():
    assert gemm_timing(ONE, 1, 128, 128, name="t").cycles == 128 + FILL + 4
    assert gemm_timing(ONE, 4, 128, 128, name="t").cycles == 128 + FILL + 4
    assert gemm_timing(ONE, 5, 128, 128, name="t").cycles == 128 + FILL + 5


def test_small_batches_are_preload_bound():
    # M=8, K=512: 4 tiles on one array, each next one 128 (its preload) after the last
    assert gemm_timing(ONE, 8, 512, 128, name="t").cycles == 4 * 128 + FILL + 8


def test_large_batches_are_stream_bound():
    # M=300: the second tile waits for the first one's 300 streamed rows
    assert gemm_timing(ONE, 300, 256, 128, name="t").cycles == 128 + 300 + FILL + 300


def test_single_buffered_preload_waits_for_the_previous_tile():
    single = dataclasses.replace(ONE, double_buffered=False)
    # first tile ends at 510; the second preloads 128 after it
    assert gemm_timing(single, 128, 256, 128, name="t").cycles == 510 + 128 + FILL + 128


def test_m_tile_passes_share_the_weight_tile():
    # M=5 in passes of 2, 2, 1 rows: each streams max(rows, 4) = 4
    assert gemm_timing(ONE, 5, 128, 128, m_tile=2, name="t").cycles == 128 + 3 * 4 + FILL
    # M=300 in passes of 128, 128, 44: no extra cost when every pass is 4 rows or more
    assert gemm_timing(ONE, 300, 128, 128, m_tile=128, name="t").cycles == 128 + 300 + FILL


def test_batch_of_gemms_shares_the_arrays():
    two = dataclasses.replace(NPU, systolic_arrays=2)
    # three 128^3 GEMMs: arrays 0 and 1 take one each, array 0 the third (start 256)
    t = gemm_timing(two, 128, 128, 128, batch=3, name="t")
    assert t.array_cycles == (256 + FILL + 128, 510)
    assert t.macs == 3 * 128**3


def test_gpt3_7b_qkv_for_one_token():
    # 4096 x 3072 on the shard: 32 x 24 = 768 tiles, 96 per array, 128 cycles apart
    qkv = load_model("gpt3-7b").weight_matrices()[0]
    t = gemm_timing(NPU, 1, qkv.rows, qkv.cols, name="layer.qkv")
    assert t.tiles == 768
    assert t.cycles == 96 * 128 + FILL + 4


@pytest.mark.parametrize("shape", [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_empty_gemm_is_an_error(shape):
    with pytest.raises(UserError, match=r"^layer\.proj: GEMM"):
        gemm_timing(NPU, *shape, name="layer.proj")


# ---------------------------------------------------------------- kernel == pure Python


def kernel(m, k, n, batch, m_tile, rows, cols, arrays, double_buffered, fn=gemm_schedule):
    state = np.zeros((STATE_ROWS, arrays), dtype=np.int64)
    cycles = fn(m, k, n, batch, m_tile, rows, cols, int(double_buffered), state)
    return [int(c) for c in state[FINISH]], int(cycles)


@st.composite
def shapes(draw):
    """Arrays of any size; at most 7 x 7 tiles per GEMM and 16 passes per tile, so the
    pass-by-pass twin stays quick."""
    rows, cols = draw(st.integers(1, 140)), draw(st.integers(1, 140))
    m = draw(st.integers(1, 700))
    m_tile = draw(st.integers(max(1, m // 16), m))
    k, n = draw(st.integers(1, 7 * rows)), draw(st.integers(1, 7 * cols))
    return (m, k, n, draw(st.integers(1, 3)), m_tile, rows, cols, draw(st.integers(1, 9)),
            draw(st.booleans()))


@pytest.mark.nojit
@settings(max_examples=300, deadline=None)
@given(shapes())
def test_kernel_equals_the_pure_python_twin(args):
    assert kernel(*args) == gemm_schedule_reference(*args)


@settings(max_examples=30, deadline=None)
@given(shapes())
def test_uncompiled_kernel_equals_the_twin(args):
    uncompiled = getattr(gemm_schedule, "py_func", gemm_schedule)  # NUMBA_DISABLE_JIT: plain
    assert kernel(*args, fn=uncompiled) == gemm_schedule_reference(*args)


# ---------------------------------------------------------------- SRAM


def small_sram(scratchpad_kib=1024, accumulator_kib=1024, **kw):
    return dataclasses.replace(NPU, scratchpad_kib=scratchpad_kib,
                               accumulator_kib=accumulator_kib, **kw)


def test_a_tile_that_just_fits():
    # one 128 x 128 tile with 128 rows: (128*128 + 128*128) * 2 B = 65536 B = half of 128 KiB
    gemm_timing(small_sram(scratchpad_kib=128), 128, 128, 128, name="t")


def test_scratchpad_overflow_names_the_op_and_the_sizes():
    npu = small_sram(scratchpad_kib=127)  # half: 65024 B
    with pytest.raises(UserError) as info:
        gemm_timing(npu, 128, 128, 128, name="layer.qkv")
    msg = str(info.value)
    assert msg.startswith("layer.qkv: GEMM 128x128x128 tiles do not fit the scratchpad")
    assert "1 tiles in flight" in msg and "weights 128x128" in msg
    assert "activations 128x128" in msg and "65536 B" in msg and "65024 B" in msg
    # (65024 / 2 - 128 * 128) / 128 = 126 rows fit
    assert "m_tile <= 126" in msg
    assert max_m_tile(npu, 128, 128) == 126
    gemm_timing(npu, 128, 128, 128, m_tile=126, name="layer.qkv")


def test_every_array_needs_its_own_tile():
    # 16 tiles, 8 in flight: 8 * (128*128 + 128*128) * 2 = 524288 B > half of 512 KiB
    with pytest.raises(UserError, match=r"8 tiles in flight .* = 524288 B, .* holds 262144 B"):
        gemm_timing(small_sram(scratchpad_kib=512), 128, 256, 1024, name="t")


def test_single_buffered_sram_is_all_usable():
    npu = small_sram(scratchpad_kib=64, double_buffered=False)
    gemm_timing(npu, 128, 128, 128, name="t")  # 65536 B in 64 KiB
    with pytest.raises(UserError, match=r"the 63 KiB scratchpad holds 64512 B"):
        gemm_timing(small_sram(scratchpad_kib=63, double_buffered=False), 128, 128, 128,
                    name="t")


def test_accumulator_overflow():
    # partial sums 128 x 128 x 2 B = 32768 B > half of 16 KiB; 8192 / (128 * 2) = 32 rows fit
    with pytest.raises(UserError) as info:
        gemm_timing(small_sram(accumulator_kib=16), 128, 128, 128, name="layer.ffn2")
    msg = str(info.value)
    assert msg.startswith("layer.ffn2: GEMM 128x128x128 tiles do not fit the accumulator")
    assert "32768 B" in msg and "8192 B" in msg and "m_tile <= 32" in msg


def test_no_m_tile_fits():
    # the weights alone (32768 B) exceed half of 32 KiB
    with pytest.raises(UserError, match="no m_tile fits"):
        gemm_timing(small_sram(scratchpad_kib=32), 1, 128, 128, name="t")
    assert max_m_tile(small_sram(scratchpad_kib=32), 128, 128) == 0


def test_the_preset_holds_a_gpt3_175b_prefill():
    ffn1 = load_model("gpt3-175b").weight_matrices()[2]
    assert gemm_timing(NPU, 2048, ffn1.rows, ffn1.cols, name="ffn1").cycles > 0
