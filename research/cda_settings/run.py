"""CDA lr x r_bn on validation: distill-only students at IPC 10 over the presets' teacher (rule.md).

    ccfs teacher fmnist-ipc50 out=RUN threads=2
    python research/cda_settings/run.py RUN > research/cda_settings/results.jsonl
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace

import torch

from ccfs import api
from ccfs.config import STUDENT_RECIPE, load_config
from ccfs.context import Run


def main() -> None:
    torch.set_num_threads(2)
    run = Run(load_config(f"{sys.argv[1]}/config.yaml", ["progress=false"]))
    for lr in (0.1, 0.25, 0.5):
        for r_bn in (0.1, 1.0):
            images = api.distill_images(run.teacher, run.data, 10, replace(run.cfg.distill, lr=lr, r_bn=r_bn),
                                        seed=0, device=run.device)
            for seed in (0, 1, 2):
                hist = api.train_student(run.data, images, run.teacher, model="convnet_w32", recipe=STUDENT_RECIPE,
                                         seed=seed, device=run.device)
                print(json.dumps({"lr": lr, "r_bn": r_bn, "seed": seed, "val_acc": hist.val_acc,
                                  "final_acc": hist.final_acc}), flush=True)


if __name__ == "__main__":
    main()
