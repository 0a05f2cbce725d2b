"""Does Predict warn when a model is out of its depth? Real scans of another kind through a workspace's model.

    python bench/out_of_depth.py WORKSPACE --same ../shared/data/busi256 --other ../shared/data/cxr256 [--n 200]

Takes the workspace's newest exported bundle (or --model KEY, as `predict.sources` names them) and predicts
--n images drawn at random from each folder: --same, the kind of image the model was trained on (its training
images are flagged as such, the rest should pass: about 1 in 100 flagged), and each --other folder, another
modality (nearly every image should be flagged). Prints, per folder: images flagged "unlike its training
images", flagged "one of its training images", and the decisions the model made.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np

from pirl_core.models import predict
from pirl_core.workspace.folder import Workspace


def sample(folder: Path, n: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"))
    chosen = np.random.default_rng(0).choice(len(files), min(n, len(files)), replace=False)
    return [(files[i].relative_to(folder).as_posix(), files[i].read_bytes()) for i in sorted(chosen)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--same", type=Path, required=True)
    ap.add_argument("--other", type=Path, nargs="+", required=True)
    ap.add_argument("--model", help="a key from predict.sources (default: the newest)")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    models = predict.sources(ws)
    key = args.model or models[0]["key"]
    model = predict.load(ws, key)
    print(f"model: {next(m['label'] for m in models if m['key'] == key)}; {model.description}; "
          f"its limit {model.familiarity['limit']:.2f}")
    for kind, folder in [("same kind", args.same), *(("other kind", f) for f in args.other)]:
        files = sample(folder, args.n)
        t = time.perf_counter()
        rows = predict.predict(model, files).rows
        unlike = sum(r["unlike its training images"] for r in rows)
        known = sum(r["one of its training images"] for r in rows)
        decisions = collections.Counter(r["decision"] for r in rows)
        print(f"{kind:10s} {folder.name:10s} {len(rows)} images ({time.perf_counter() - t:.0f} s): "
              f"{unlike} flagged unlike its training images ({unlike / len(rows):.0%}), {known} flagged one of its "
              "training images (a bundle keeps no trace of them: 0); decisions "
              + ", ".join(f"{c} {k}" for c, k in decisions.most_common()), flush=True)


if __name__ == "__main__":
    main()
