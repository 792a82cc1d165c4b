"""ccfs: Curriculum Coarse-to-Fine Selection for high-IPC dataset distillation."""

__version__ = "0.1.0"
