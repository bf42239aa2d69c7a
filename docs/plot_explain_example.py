"""The README's two explain.py figures, from a finished run of the learnability suite.

  python docs/plot_explain_example.py RUN_DIR DATA_ROOT
  # e.g. RUN_DIR = runs/learnability/runs/default-seed42/regions (bench.importance_recovery),
  #      DATA_ROOT = runs/learnability/cohorts/regions
  # writes docs/explain_importance.png and docs/explain_glass_brain.png

The suite's cohorts are generated on an abstract atlas: their regions have no place in a brain.
For the glass brain, region i is drawn at the i-th of the 160 Dosenbach et al. (2010) MNI
coordinates that nilearn ships (offline), an illustration of the figure, not anatomy; a real
atlas's coordinates go in the same CSV (`--atlas_coords`: region, x, y, z).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def write_display_coords(path: str, num_regions: int) -> None:
  """explain.py's --atlas_coords CSV: the first `num_regions` Dosenbach 2010 coordinates."""
  from nilearn import datasets

  rois = datasets.fetch_coords_dosenbach_2010().rois
  if num_regions > len(rois):
    raise SystemExit(f"{num_regions} regions: the display atlas has only {len(rois)}")
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["region", "x", "y", "z"])
    for i, (x, y, z) in enumerate(rois[["x", "y", "z"]].to_numpy()[:num_regions]):
      writer.writerow([i, x, y, z])


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  run_dir, data_root = argv
  sys.path.insert(0, os.path.dirname(HERE))
  import explain  # the repository's entry point

  with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
    num_regions = json.load(f)["model"]["input_dim"]
  with tempfile.TemporaryDirectory() as work:
    coords = os.path.join(work, "coords.csv")
    write_display_coords(coords, num_regions)
    out_dir = os.path.join(work, "explain")
    code = explain.main([run_dir, "--data_root", data_root, "--out_dir", out_dir,
                         "--atlas_coords", coords, "--steps", "64"])
    if code:
      return code
    for name in ("importance.png", "glass_brain.png"):
      shutil.copyfile(os.path.join(out_dir, name), os.path.join(HERE, f"explain_{name}"))
  print(f"wrote {HERE}/explain_importance.png and {HERE}/explain_glass_brain.png")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
