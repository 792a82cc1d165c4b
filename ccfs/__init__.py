"""ccfs: Curriculum Coarse-to-Fine Selection for high-IPC dataset distillation.

The Python API (`ccfs.train_teacher`, `ccfs.distill_images`, `ccfs.select`, `ccfs.train_student`, ...)
lives in `ccfs.api` and is loaded on first use, so `import ccfs.config` stays torch-free.
"""

__version__ = "0.1.0"

_API = ("Dataset", "Recipe", "SelectCfg", "Split", "Teacher", "distill_images", "from_tensors", "load_dataset",
        "new_model", "select", "synthetic_set", "train_student", "train_teacher")


def __getattr__(name: str):
    if name in _API:
        from ccfs import api  # on first use: `import ccfs.config` stays free of torch

        return getattr(api, name)
    raise AttributeError(f"module 'ccfs' has no attribute {name!r}")
