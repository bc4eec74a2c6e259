"""neupims-py: a cycle-level simulator of NPU + PIM accelerators (NeuPIMs) serving LLM inference."""

__version__ = "0.1.0"
