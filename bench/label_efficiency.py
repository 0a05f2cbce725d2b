"""Does choosing what to label beat random choice? The labeling loop measured with a simulated annotator.

For a labeled folder (class sub-folders; `--positive` against the rest, or a filename,label,group CSV such as
cxr256's labels_groups.csv), this imports the images as a pool and as a labeled set, pretrains PIRL at this
machine's defaults (or reuses the workspace's finished run), then runs `pirl_core.labeling.simulate.on_dataset`,
the code behind the Label page's simulation: budgets 10-160 labels in batches of 10, 20 seeds, the product's
linear probe scored on a held-out part kept whole by patient and near-copy. It prints each strategy's curve
(mean and SD over seeds), where the app's choice reaches with half the labels what random choice reaches, the
gain at 20 labels, and the time one batch of 20 suggestions takes on a 10,000-image pool.

    python bench/label_efficiency.py ../shared/data/busi256 pirl-screenshots --positive malignant
    python bench/label_efficiency.py ../shared/data/cxr256 bench-cxr --labels ../shared/data/cxr256/labels_groups.csv
    python bench/label_efficiency.py ../shared/data/cxr256 bench-cxr --run 1 --dataset binary  # compare_quality's set
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path

import numpy as np

from pirl_core.data import ingest, sources
from pirl_core.evaluation import neighbours
from pirl_core.jobs import queue
from pirl_core.labeling import simulate, strategies
from pirl_core.training import pretraining
from pirl_core.workspace.folder import Workspace


def _positive_csv(data: Path, positive: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["filename", "label"])
    for path in sorted(data.rglob("*")):
        if path.is_file() and path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            rel = path.relative_to(data).as_posix()
            writer.writerow([rel, positive if rel.split("/")[0] == positive else f"not {positive}"])
    return out.getvalue().encode()


def _workspace(args) -> tuple[Workspace, int, int]:
    ws = Workspace(args.workspace)
    pool, labeled = f"{args.data.name}-pool", f"{args.data.name}-labeled"
    existing = [d for d in ws.store.datasets() if d["kind"] == "labeled" and "from_labels" not in d["info"]]
    existing = [d for d in existing if d["name"] == labeled] or existing  # this bench's own set, where it made one
    if args.dataset:  # a labeled set the workspace holds already, e.g. one bench/compare_quality.py made
        existing = [d for d in ws.store.datasets() if d["name"] == args.dataset]
        if not existing:
            raise SystemExit(f"{args.workspace} has no dataset named {args.dataset!r}")
    if existing:  # a workspace made before (bench/screenshot_workspace.py): its own names
        labeled_id = existing[-1]["id"]
    else:
        table = args.labels.read_bytes() if args.labels else _positive_csv(args.data, args.positive)
        ingest.ingest(ws, sources.folder_source(args.data, check_roots=False), pool)
        labeled_id = ingest.ingest(ws, sources.folder_source(args.data, check_roots=False), labeled,
                                   labels_csv=table).dataset_id
    if args.run:  # a given run, finished or stopped early (its last checkpoint)
        return ws, labeled_id, args.run
    done = [j for j in pretraining.runs(ws, with_checkpoint=True) if j["status"] == "succeeded"]
    if done:
        return ws, labeled_id, done[0]["id"]
    active = [j for j in pretraining.runs(ws) if j["status"] in queue.ACTIVE]
    overrides = {"epochs": args.epochs} if args.epochs else {}
    run = active[0]["id"] if active else pretraining.start(ws, pool, pretraining.default_config(**overrides))
    t0 = time.time()
    job = queue.wait(ws, run, poll_s=10)
    print(f"pretrain #{run}: {job['status']} after {(time.time() - t0) / 60:.1f} min", flush=True)
    return ws, labeled_id, run


def _suggestion_time(dims: int, n_pool: int = 10_000) -> dict[str, float]:
    """Seconds for a batch of 20 on `n_pool` kept feature vectors: the selection space, then the choice."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n_pool, dims)).astype(np.float32)
    t0 = time.perf_counter()
    space = strategies.selection_space(vectors)
    out = {"selection space": time.perf_counter() - t0}
    y = np.full(n_pool, -1)
    for rule, labeled in (("typical", 0), ("uncertain", 40)):
        y[:labeled] = np.arange(labeled) % 2
        t0 = time.perf_counter()
        strategies.suggest(space, y, 20, 2, rule)
        out[rule] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--positive", default="malignant", help="this class against the rest")
    parser.add_argument("--labels", type=Path, help="a filename,label[,group] CSV instead of --positive")
    parser.add_argument("--seeds", type=int, default=20, help="the Label page's simulation runs "
                        f"{simulate.SEEDS}; at 5 the spread at 20 labels (SD 0.04-0.09) hides gains under 0.05")
    parser.add_argument("--epochs", type=int, help="pretrain epochs (default: this machine's default)")
    parser.add_argument("--run", type=int, help="use this pretrain run's last checkpoint (finished or not)")
    parser.add_argument("--dataset", help="simulate on this labeled set of the workspace (default: the data's own)")
    args = parser.parse_args()
    ws, labeled_id, run = _workspace(args)
    t0 = time.time()
    curves = simulate.on_dataset(ws, labeled_id, run, seeds=args.seeds,
                                 on_progress=lambda d, n: print(f"  {d}/{n} simulated", flush=True))
    print(f"{ws.store.dataset(labeled_id)['name']}, run #{run}: pool {curves.n_pool}, held out {curves.n_test}; "
          f"{args.seeds} seeds, {(time.time() - t0) / 60:.1f} min")
    print(f"{'labels':>9s} " + " ".join(f"{b:>13d}" for b in curves.budgets))
    for name in curves.strategies:
        mean, sd = curves.mean(name), curves.spread(name)
        print(f"{name:>9s} " + " ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(mean, sd)))
    for name in ("typical", "uncertain", "auto"):
        reached = simulate.half_the_labels(curves, name)
        print(f"{name} with half the labels vs random: " + "; ".join(
            f"{r['half']} vs {r['labels']}: {r[f'{name}_auc_at_half']:.3f} vs {r['random_auc']:.3f} "
            f"({'reached' if r['reached'] else 'not reached'})" for r in reached))
    at20 = curves.budgets.index(20) if 20 in curves.budgets else None
    if at20 is not None:
        gains = np.array(curves.strategies["auto"])[:, at20] - np.array(curves.strategies["random"])[:, at20]
        print(f"auto - random at 20 labels: {gains.mean():+.3f} (SD {gains.std():.3f} over seeds)")
    dims = neighbours.load_space(ws, run, "features", labeled_id).vectors.shape[1]
    times = _suggestion_time(dims)
    print(f"a batch of 20 on a 10,000-image pool ({dims}-d features kept): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
