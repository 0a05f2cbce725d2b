"""A harder cxr256 task for bench/compare_quality.py: viral vs bacterial pneumonia, patients as groups.

cxr256's pneumonia vs normal leaves no room to show a gain (ImageNet features alone reach 0.988: the shortcut its
README warns of, size and aspect ratio). Among the 1,113 pneumonia images, viral vs bacterial has no such
shortcut. Writes a filename,label,group CSV from the set's metadata.csv:

    python bench/cxr_subtype_labels.py ../shared/data/cxr256 cxr-subtype.csv
    python bench/compare_quality.py ../shared/data/cxr256 --modes linear --tasks binary --positive virus \\
        --labels cxr-subtype.csv --inits imagenet,imagenet+pirl --variant slow-backbone:backbone_lr_scale=0.1
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="the cxr256 folder (with metadata.csv)")
    ap.add_argument("out", help="the labels CSV to write")
    args = ap.parse_args()
    with open(Path(args.data) / "metadata.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["subtype"] in ("bacteria", "virus")]
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label", "group"])
        w.writerows((r["file"], r["subtype"], r["patient_id"]) for r in rows)
    print(f"{args.out}: {dict(Counter(r['subtype'] for r in rows))}, "
          f"{len({r['patient_id'] for r in rows})} patients")


if __name__ == "__main__":
    main()
