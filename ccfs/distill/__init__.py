"""Distillation: SRe2L / CDA pixel optimisation (bn_matching) and distilled-image files
(folder). The stage that runs them lives in `ccfs.distill.run`."""
from ccfs.distill.bn_matching import BNStatsLoss, SynthParams, cda_min_scale, class_batches, synthesize
from ccfs.distill.folder import (export_png_folder, import_png_folder, import_tensor_file, quantize,
                                 save_image_grid)

__all__ = ["BNStatsLoss", "SynthParams", "cda_min_scale", "class_batches", "synthesize",
           "export_png_folder", "import_png_folder", "import_tensor_file", "quantize", "save_image_grid"]
