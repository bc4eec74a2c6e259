"""The Numba-compiled timing engine: flat arrays and NamedTuples in, arrays out.

Nothing here imports from the rest of the package except ``neupims_py.formats``; settings
reach kernels as arguments (``DramParams``), state lives in arrays the caller owns
(``DramState``) so it survives between calls (open rows, refresh timing, PIM buffers).
"""
