"""The `ccfs` command: `ccfs STAGE PRESET [key=value ...]` and `ccfs prepare`.

User errors (`CCFSError`) print one line and exit 2; nothing else is caught.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from ccfs.errors import CCFSError

# function-level imports: `ccfs --help` and `ccfs config` load no torch (seconds on a cold disk)

STAGE_HELP = {
    "teacher": "train the teacher on the full train set (or import one) and record difficulty scores",
    "distill": "make the distilled part (SRe2L / CDA from the teacher, or import images)",
    "select": "choose the real part: CCFS curricula and the baselines in select.method",
    "evaluate": "train fresh KD students on each synthetic set, several seeds; append to results.jsonl",
    "export": "write each synthetic set as class folders of PNGs with a labels file",
    "report": "write OUT/report.md with tables and plots from the run's records",
    "run": "the whole pipeline: teacher, distill, select, evaluate, export, report (resumable)",
}

EPILOG = """examples:
  ccfs prepare --dataset fashion-mnist
  ccfs prepare --dataset imagefolder --root /data/imagenet --image-size 64 --store /data/in64
  ccfs run fmnist-quick
  ccfs run fmnist-ipc50 out=runs/ipc50 select.method=[ccfs,random,window] eval.seeds=[0,1,2]
  ccfs select fmnist-quick out=runs/quick select.curricula=1

PRESET is a name under configs/ or a YAML file; key=value overrides use dotted keys
(data.root, teacher.model, select.ipc, select.alpha, train.epochs, eval.seeds, out, ...).
`ccfs config [PRESET] [key=value ...]` lists every key with its value and description,
and the selection methods.
Every stage reads and writes artifacts in the run directory `out`, and skips work that is
already finished there, so an interrupted run resumes where it stopped."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ccfs", description="CCFS dataset distillation: from a raw "
                                "dataset to an evaluated, exported synthetic training set.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    prep = sub.add_parser("prepare", help="decode a dataset once into the tensor cache and summarise it")
    prep.add_argument("--dataset", required=True, help="dataset name (fashion-mnist, mnist, cifar10, "
                      "cifar100, tiny-imagenet, imagefolder)")
    prep.add_argument("--root", help="folder holding the dataset files (default: the table's default)")
    prep.add_argument("--image-size", type=int, help="imagefolder: resize images to this size")
    prep.add_argument("--channels", type=int, choices=(1, 3), help="imagefolder: 1 (gray) or 3 (RGB)")
    prep.add_argument("--store", help="write an on-disk uint8 store (read in place, row by row) to this folder "
                      "instead (datasets larger than memory; read it with data.store=STORE)")
    cfg = sub.add_parser("config", help="list every config key (type, value, description) and the methods",
                         description="List every config key of PRESET (or the defaults) after the overrides.")
    cfg.add_argument("preset", nargs="?", help="preset name under configs/ or a YAML path")
    cfg.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    for name, text in STAGE_HELP.items():
        sp = sub.add_parser(name, help=text, description=text, epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("preset", help="preset name under configs/ or a YAML path")
        sp.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return p


def _prepare(args) -> None:
    from ccfs.data.cache import load_dataset
    from ccfs.data.store import prepare_store

    options = {k: v for k, v in (("image_size", args.image_size), ("channels", args.channels)) if v}
    if args.store:
        print(prepare_store(args.dataset, args.root, args.store, **options).summary())
        print(f"store: {args.store} (read it with data.store={args.store})")
    else:
        print(load_dataset(args.dataset, args.root, **options).summary())


def _config(args) -> None:
    from ccfs.config import describe, load_config
    from ccfs.selection.methods import METHODS, get

    cfg = load_config(args.preset, args.overrides)
    for name in cfg.select.method:
        get(name)  # an unknown method is a ConfigError, as in a stage
    rows = describe(cfg)
    width = max(len(k) for k, *_ in rows)
    for key, tp, value, text in rows:
        print(f"{key:<{width}}  {value!r:<22} {text}  [{tp}]")
    print("\nselect.method choices:")
    for name, m in METHODS.items():
        print(f"  {name:<14} {m.description}")


def _stage(args) -> None:
    """A stage command; under torchrun every rank runs it and rank 0 alone speaks."""
    import contextlib

    from ccfs import distributed
    from ccfs.config import load_config
    from ccfs.pipeline import run_stage

    cfg = load_config(args.preset, args.overrides)
    line = distributed.init(cfg.device)
    try:
        quiet = not distributed.is_main()
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if quiet else sys.stdout):
            if line:
                print(line)
            if quiet:
                cfg.progress = False
            run_stage(args.stage, cfg)
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.stage == "prepare":
            _prepare(args)
        elif args.stage == "config":
            _config(args)
        else:
            _stage(args)
    except CCFSError as e:
        from ccfs.distributed import RankFailed

        if not isinstance(e, RankFailed) and os.environ.get("RANK", "0") == "0":  # rank 0 says why, once
            print(f"ccfs: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccfs: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the machine, not the input: a full disk, a read-only folder, a vanished mount
        if os.environ.get("RANK", "0") == "0":
            print(f"ccfs: error: {os_error_line(e)}", file=sys.stderr)
        return 1
    return 0


def os_error_line(e: OSError) -> str:
    """One line for an error of the file system: what, where, and what to do."""
    where = f" ({e.filename})" if e.filename else ""
    again = "run the same command again: finished steps are kept and it resumes"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device{where}: free space (or use an out= on another disk) and {again}"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {e.strerror}; make the folder writable (or use another out=) and {again}"
    return f"{e.strerror or type(e).__name__}{where}; fix it and {again}"


if __name__ == "__main__":
    sys.exit(main())
