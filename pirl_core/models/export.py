"""Export a finetuned model as one self-contained zip, and predict from such a zip alone.

The bundle holds: model.ts (TorchScript), model.onnx, state_dict.pt (plain tensors),
model_card.md / model_card.json (task, preprocessing, training summary, test metrics with CIs,
limitations), and manifest.json with the SHA-256 of every member. No image, file name or
patient id goes in. Before the zip is offered, TorchScript and ONNX outputs are checked
against the workspace model on the test images. Files are written under a temporary name and
renamed, so a crash leaves no half bundle.

`predict` needs only the bundle: it checks the manifest, rebuilds the network from the
state_dict (loaded with weights_only=True, never unpickling arbitrary objects) and applies the
same preprocessing as training.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import platform
import time
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..access import audit
from ..data import preprocess
from ..data.image_cache import cache_size_for, dataset_cache
from ..engine import checkpoint
from ..engine.backbones import build_backbone
from ..engine.finetune import Classifier
from ..engine.model import eval_batches
from ..engine.train_state import load_pretrained
from ..engine.views import IMAGENET_MEAN, IMAGENET_STD
from ..errors import BadImage, PirlError
from ..evaluation.compare import decision_threshold
from ..evaluation.statistics import auc_with_ci
from ..jobs import queue
from ..workspace.atomic import atomic_path
from ..workspace.folder import Workspace
from . import familiarity, signing

BUNDLE_FORMAT = 1
SIGNATURE = "manifest.sig"  # Ed25519 over manifest.json (signing.py)
MEMBERS = ("model.ts", "model.onnx", "state_dict.pt", "model_card.md", "model_card.json")


def load_classifier(model_file: str | Path) -> tuple[Classifier, dict]:
    state = checkpoint.load(model_file)
    model = Classifier(build_backbone(state["backbone"], parts=state.get("parts", 1)), len(state["classes"]))
    model.load_state_dict(state["state_dict"])
    return model.eval(), state


def _label_origin(dataset: dict) -> dict:
    """How the labels came to be: given on the Label page (how many, by how many annotators, chosen how), or
    imported with the images."""
    origin = dataset["info"].get("from_labels")
    if origin is None:
        return {"source": "imported with the images (class folders or a labels CSV)"}
    return {"source": f"given in PIRL Studio's labeling loop on {origin['pool']}", "labels": origin["labels"],
            "annotators": origin["annotators"], "chosen_by": origin["strategies"],
            "disagreements_left_out": origin["conflicts_left_out"]}


def _features(state: dict) -> str:
    """What the classifier reads: one backbone, or (ImageNet+PIRL's linear probe) pretrained ones beside ImageNet's."""
    pretrained = state.get("parts", 1) - 1
    if not pretrained:
        return f"one {state['backbone']}'s"
    runs = "the PIRL-pretrained backbone's" if pretrained == 1 else f"{pretrained} PIRL-pretrained backbones'"
    return f"{runs} and the ImageNet backbone's, side by side"


def _own_test(job: dict, state: dict) -> dict | None:
    """The exported model's own figure: AUC with its 95% CI on its own test part, images it never trained on (a
    cross-validated AUC pools the other folds' models, whose test images trained this one)."""
    runs = queue.result_of(job).runs
    full = max((r["fraction"] for r in runs), default=None)
    run = next((r for r in runs if r["image_ids"] == state.get("test_image_ids") and r["fraction"] == full), None)
    if run is None:
        return None
    cfg = queue.config_of(job)
    where = (f"fold {state['fold'] + 1} of {cfg.folds}" if state["fold"] is not None else "the fixed test split")
    ci = auc_with_ci(np.asarray(run["y"]), np.asarray(run["probs"]))
    return {**{k: ci[k] for k in ("auc", "ci_low", "ci_high", "n", "level")},
            "on": f"its own test part ({where}): images this model never trained on"}


def _card(ws: Workspace, job: dict, state: dict, comparison_row: dict | None) -> dict:
    cfg = queue.config_of(job)
    store = ws.store
    rows = [r for r in store.images(cfg.labeled_dataset_id) if r["label"] is not None]
    per_split: dict[str, dict[str, int]] = {}
    for r in rows:
        per_split.setdefault(r["split"] or "none", {}).setdefault(r["label"], 0)
        per_split[r["split"] or "none"][r["label"]] += 1
    metrics, saved = None, None
    if comparison_row:
        summary = comparison_row["result"].get("summary") or {}
        metrics = next(({k: e[k] for k in ("auc", "ci_low", "ci_high", "n", "level", "fold_aucs")}
                        for e in summary.get("table", []) if e["arm"] == cfg.label), None)
        if metrics and cfg.folds:
            metrics["on"] = (f"cross-validated: {cfg.folds} folds x {cfg.repeats} repeat(s) of this recipe, pooled "
                             "(an estimate for the recipe; the exported model trained on some of these images)")
        saved = next(({"against": r["baseline"], "sentence": r["sentence"], "points": r["points"]}
                      for r in summary.get("labels_saved", []) if r["arm"] == cfg.label), None)
    pretrain = store.job(cfg.pretrain_job) if cfg.pretrain_job is not None else None
    return {
        "format": BUNDLE_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task": {"type": "image classification", "classes": state["classes"],
                 "positive_class": state["classes"][-1],  # what sensitivity, PPV and the threshold are about
                 "output": "softmax probabilities, one per class, in this order"},
        "preprocessing": {"input_size": state["image_size"], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                          "channels": "RGB; grayscale images repeated to 3 channels",
                          "resize": preprocess.describe(state["image_size"]),
                          "dicom": "modality LUT, then VOI LUT / window; MONOCHROME1 inverted; "
                                   "min-max to 8 bits; multi-frame: first frame"},
        "model": {"backbone": state["backbone"], "initialisation": cfg.init, "mode": cfg.finetune.mode,
                  "features": _features(state),
                  "pretrain_run": cfg.pretrain_job,
                  **({"pretrain_runs_together": cfg.pretrain_jobs} if cfg.more_pretrain_jobs else {}),
                  "pretrain_config": {k: v for k, v in queue.config_of(pretrain).to_dict().items()
                                      if k != "weights_path"} if pretrain else None,
                  "finetune_config": cfg.finetune.to_dict(),
                  "trained_on": f"fold {state['fold'] + 1} of {cfg.folds}" if state["fold"] is not None
                  else "the fixed training split", "n_train": state["n_train"]},
        "training_data": {"dataset_content_hash": store.dataset(cfg.labeled_dataset_id)["content_hash"],
                          "counts_per_split_and_class": per_split,
                          "labels": _label_origin(store.dataset(cfg.labeled_dataset_id))},
        "test_metrics": _own_test(job, state),
        "cross_validated_metrics": metrics if cfg.folds else None,
        "labels_saved": saved,
        "decision_threshold": decision_threshold(ws, job["id"]),
        "intended_use": "Research use only. Not a medical device; not for diagnosis or treatment decisions.",
        "limitations": ["Trained on one dataset from one source; performance elsewhere is unknown until measured.",
                        "Small test sets give wide confidence intervals; read the CI, not only the AUC.",
                        "Inputs must be preprocessed exactly as described here."],
        "software": {"pirl_studio": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _numbers(values) -> str:
    return " / ".join(f"{v:.3f}" for v in values)


def _images_line(images: dict | None) -> str:
    if not images:
        return "not recorded"
    return (f"{images['images']} images{' (SYNTHETIC demo images, not patient data)' if images['synthetic'] else ''}; "
            f"8-bit intensity mean {images['pixel_mean']:.0f}, spread {images['pixel_std']:.0f}; "
            f"{images['grayscale_share']:.0%} grayscale. Predict flags an input whose features lie beyond what 99% "
            "of these and the test part show")


def _card_markdown(card: dict) -> str:
    m = card["test_metrics"]
    metric = (f"AUC {m['auc']:.3f} (95% CI {m['ci_low']:.3f}-{m['ci_high']:.3f}) on {m['n']} images: {m['on']}"
              if m else "not recorded")
    cv = card.get("cross_validated_metrics")
    if cv:
        metric += (f"; the recipe, cross-validated: AUC {cv['auc']:.3f} (95% CI {cv['ci_low']:.3f}-"
                   f"{cv['ci_high']:.3f}, {cv['n']} images, every image tested once per repeat)")
    pre, model, sw = card["preprocessing"], card["model"], card["software"]
    t = card.get("decision_threshold")
    decision = (f"'{card['task']['classes'][1]}' when its probability is at least {t['value']:.2f} ({t['how']})"
                if t else "the most probable class")
    saved = card["labels_saved"]["sentence"] if card.get("labels_saved") else "not measured (one label fraction)"
    origin = card["training_data"]["labels"]
    labels = origin["source"] + (f": {origin['labels']} labels by {origin['annotators']} annotator(s), chosen by "
                                 f"{', '.join(origin['chosen_by']) or 'hand'}; {origin['disagreements_left_out']} "
                                 "disagreement(s) left out" if "labels" in origin else "")
    return f"""# Model card: {', '.join(card['task']['classes'])} classifier

**Intended use:** {card['intended_use']}

| | |
|---|---|
| Task | {card['task']['type']}; classes, in output order: {', '.join(card['task']['classes'])} |
| Positive class | {card['task']['classes'][-1]}: the finding sensitivity, PPV and the threshold are about |
| Backbone / initialisation | {model['backbone']} / {model['initialisation']} ({model['mode']}); features: \
{model['features']} |
| Trained on | {model['trained_on']}, {model['n_train']} images |
| Test metrics | {metric} |
| Labels | {labels} |
| Training images | {_images_line(card['training_data'].get('images'))} |
| Labels saved | {saved} |
| Decision | {decision} |
| Input | {pre['input_size']} x {pre['input_size']} px colour (RGB), each channel normalised: minus mean \
{_numbers(pre['mean'])}, divided by standard deviation {_numbers(pre['std'])} (the ImageNet values) |
| Resize | {pre['resize']} |
| DICOM | {pre['dicom']} |
| Software | PIRL Studio {sw['pirl_studio']}, PyTorch {sw['torch']}, Python {sw['python']} |
| Created | {card['created']} |

## Use it

```bash
pirl predict --model bundle.zip images/*.png --out predictions.csv
```

```python
import torch
model = torch.jit.load("model.ts")          # input: (N, 3, {pre['input_size']}, {pre['input_size']}), normalised
probs = torch.softmax(model(x), dim=1)

import onnxruntime as ort
session = ort.InferenceSession("model.onnx")
logits = session.run(None, {{"image": x.numpy()}})[0]
```

## Limitations
""" + "\n".join(f"- {item}" for item in card["limitations"]) + "\n"


@contextmanager
def _torchscript():
    """TorchScript is what the bundle's users load (torch.jit.load, C++ libtorch); torch deprecates tracing and
    saving it but offers no other way to write that format, so its deprecation warnings stop here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.")
        yield


def export_finetune(ws: Workspace, job_id: int, out: str | Path | None = None) -> dict:
    """Write the bundle zip for finetune job `job_id`; returns where, and the verification figures."""
    store = ws.store
    job = store.job(job_id)
    if job is None or job["kind"] != "finetune" or job["status"] != "succeeded":
        raise PirlError(f"Job {job_id} is not a finished finetune job.")
    model_file = queue.result_of(job).model
    if not model_file or not Path(model_file).exists():
        raise PirlError(f"Finetune job {job_id} kept no model file; run the comparison again.")
    model, state = load_classifier(model_file)
    comparison = next((e for e in store.evaluations() if e["result"].get("kind") == "comparison"
                       and any(a["job_id"] == job_id for a in e["result"]["arms"])), None)
    card = _card(ws, job, state, comparison)

    size = state["image_size"]
    labeled_dataset_id = queue.config_of(job).labeled_dataset_id
    known = familiarity.from_workspace(ws, model, labeled_dataset_id, state["test_image_ids"], size,
                                       familiarity.beside(model_file))
    card["training_data"]["images"] = familiarity.statement(
        known, synthetic=bool(store.dataset(labeled_dataset_id)["info"].get("synthetic")))
    rows = {r["id"]: i for i, r in enumerate(store.images(labeled_dataset_id))}
    cache = dataset_cache(ws, labeled_dataset_id, cache_size_for(size))
    test = [rows[i] for i in state["test_image_ids"] if i in rows][:64]
    x = next(eval_batches(cache[sorted(test)], size, batch_size=len(test)))
    with torch.no_grad():
        reference = model(x)
        with _torchscript():
            scripted = torch.jit.trace(model, x[:1], _store_inputs=False)  # the input is a patient's image
        ts_diff = float((torch.softmax(scripted(x), 1) - torch.softmax(reference, 1)).abs().max())
    # ONNX through torch.export (the dynamo exporter; the TorchScript-based one is deprecated), any batch size
    program = torch.onnx.export(model, (x[:2],), dynamo=True, input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    onnx_bytes = _without_stack_traces(program.model_proto).SerializeToString()
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_logits = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    onnx_diff = float((torch.softmax(onnx_logits, 1) - torch.softmax(reference, 1)).abs().max())
    tolerance = 1e-4  # in probability
    if ts_diff > tolerance or onnx_diff > tolerance:
        raise PirlError(f"Exported models disagree with the workspace model (TorchScript {ts_diff:.2g}, "
                        f"ONNX {onnx_diff:.2g} > {tolerance}); not exported.")
    card["verification"] = {"test_images": len(test), "max_abs_prob_diff_torchscript": ts_diff,
                            "max_abs_prob_diff_onnx": onnx_diff}

    members: dict[str, bytes] = {}
    buf = io.BytesIO()
    with _torchscript():
        torch.jit.save(scripted, buf)
    members["model.ts"] = _without_debug_info(buf.getvalue())
    members["model.onnx"] = onnx_bytes
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "classes": state["classes"], "backbone": state["backbone"],
                "parts": state.get("parts", 1), "image_size": size, "familiarity": familiarity.for_bundle(known)}, buf)
    members["state_dict.pt"] = buf.getvalue()
    members["model_card.json"] = json.dumps(card, indent=2, default=str).encode()
    members["model_card.md"] = _card_markdown(card).encode()
    manifest = {"format": BUNDLE_FORMAT, "sha256": {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}}

    out = Path(out) if out else ws.exports / f"finetune-{job_id}-{job['config']['init']}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("manifest.json", manifest_bytes)
        zf.writestr(SIGNATURE, signing.sign(ws, manifest_bytes))
    cfg = queue.config_of(job)
    info = {"kind": "finetune", "init": cfg.init, "label": cfg.label,
            "size_bytes": out.stat().st_size, "public_key": str(signing.public_key_path(ws)),
            **card["verification"], "test_metrics": card["test_metrics"]}
    store.add_export(job_id, str(out), info)
    audit.record(ws, "export model", f"job #{job_id}", out.name)
    return {"path": str(out), **info}


def export_backbone(ws: Workspace, pretrain_job: int, out: str | Path | None = None) -> str:
    """The PIRL-pretrained backbone alone: its weights as a .pth file in the layout torchvision's model of
    the same name loads (`model.load_state_dict(torch.load(path), strict=False)`; the classifier layer is
    not included)."""
    job = ws.store.job(pretrain_job)
    if job is None or job["kind"] != "pretrain" or not job["checkpoint"]:
        raise PirlError(f"Pretrain run #{pretrain_job} has no checkpoint.")
    model, config, _ = load_pretrained(job["checkpoint"])
    out = Path(out) if out else ws.exports / f"pirl-{config.backbone}-run{pretrain_job}.pth"
    with atomic_path(out) as tmp:
        torch.save({k: v.clone() for k, v in model.backbone.trunk.state_dict().items()}, tmp)
    ws.store.add_export(pretrain_job, str(out), {"kind": "backbone", "backbone": config.backbone})
    audit.record(ws, "export backbone", f"run #{pretrain_job}", out.name)
    return str(out)


# -- predicting from a bundle alone -------------------------------------------------------------
def open_bundle(path: str | Path, trusted_key: str | Path | None = None,
                keys: list | None = None) -> tuple[Classifier, dict]:
    """Check the bundle and rebuild its model; a PirlError names whatever is wrong.

    Every member the format has must be present and listed in the manifest, and every listed member must
    match its SHA-256: that detects damage, not a deliberate change (anyone can re-hash). With
    `trusted_key` (a .pub file) the manifest's signature must verify against it: that detects tampering.
    With `keys` (a workspace's trusted keys) nothing is refused on the signature: `meta["trusted"]` says
    whether one of them signed it. `meta["signature"]` says which check held."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            manifest_bytes = zf.read("manifest.json")
            manifest = json.loads(manifest_bytes)
            listed = manifest["sha256"]
            missing = sorted(set(MEMBERS) - names) + sorted(set(listed) - names)
            unlisted = sorted(set(MEMBERS) - set(listed))
            if missing or unlisted:
                raise PirlError(f"{path} is incomplete: " + "; ".join(
                    part for part in (f"missing {', '.join(sorted(set(missing)))}" if missing else "",
                                      f"not in the manifest: {', '.join(unlisted)}" if unlisted else "") if part))
            data = {}
            for name, digest in listed.items():
                blob = zf.read(name)
                if hashlib.sha256(blob).hexdigest() != digest:
                    raise PirlError(f"{path}: {name} does not match the bundle's manifest (damaged, or changed "
                                    "after export). The hashes detect damage; only a signature checked with "
                                    "--trust detects a deliberate change.")
                data[name] = blob
            signature = zf.read(SIGNATURE) if SIGNATURE in names else None
    except (zipfile.BadZipFile, KeyError, TypeError, json.JSONDecodeError, OSError, EOFError) as exc:
        raise PirlError(f"{path} is not a complete PIRL Studio bundle ({type(exc).__name__}: {exc}).") from None
    trusted = False
    if trusted_key is not None:
        checked, trusted = signing.verify(signing.load_public_key(trusted_key), manifest_bytes, signature,
                                          str(path)), True
    elif keys is not None:
        trusted, checked = signing.who_signed(keys, manifest_bytes, signature)
    else:
        checked = ("hashes match (integrity only: pass --trust KEY.pub to check the signature)"
                   if signature else "hashes match (unsigned)")
    try:
        state = torch.load(io.BytesIO(data["state_dict.pt"]), map_location="cpu", weights_only=True)
        card = json.loads(data["model_card.json"])
        model = Classifier(build_backbone(state["backbone"], parts=state.get("parts", 1)), len(state["classes"]))
        model.load_state_dict(state["state_dict"])
    except pickle.UnpicklingError:
        raise PirlError(f"{path}: state_dict.pt holds code or objects other than tensors; refused (it is never "
                        "unpickled).") from None
    except (RuntimeError, KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise PirlError(f"{path}: the weights do not fit the model the bundle describes "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).") from None
    return model.eval(), {**state, "card": card, "signature": checked, "trusted": trusted}


def _without_debug_info(torchscript: bytes) -> bytes:
    """A TorchScript archive without its `.debug_pkl` members: source ranges that name the files of the build
    (the virtualenv's paths). torch.jit.load does not need them."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(torchscript)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info, src.read(info.filename))
    return out.getvalue()


def _without_stack_traces(proto):
    """An ONNX model without the exporter's per-node metadata and doc strings: Python stack traces that name
    the files of the build. Inference does not read them."""
    def clean(graph):
        del graph.metadata_props[:]
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    clean(sub)

    clean(proto.graph)
    for function in proto.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]
            node.doc_string = ""
    del proto.metadata_props[:]
    return proto


@torch.no_grad()
def predict_files(bundle: str | Path, paths: list[str | Path], trusted_key: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """One row per file: its class probabilities, or the reason it could not be read. `log` hears which
    check the bundle passed."""
    model, meta = open_bundle(bundle, trusted_key)
    if log:
        log(f"{bundle}: {meta['signature']}")
    out = []
    for p in paths:
        p = Path(p)
        try:
            x = preprocess.model_input(p.read_bytes(), p.name, meta["image_size"])
        except (BadImage, OSError) as exc:
            out.append({"file": str(p), "error": str(exc)})
            continue
        probs = torch.softmax(model(x), dim=1)[0].tolist()
        out.append({"file": str(p), **{f"p_{c}": v for c, v in zip(meta["classes"], probs)},
                    "predicted": meta["classes"][decide(probs, meta["card"].get("decision_threshold"))]})
    return out


def decide(probs, threshold: dict | None) -> int:
    """The class called: for a binary model with a stated threshold, the second class at or above it;
    otherwise the most probable class."""
    if threshold is not None and len(probs) == 2:
        return int(probs[1] >= threshold["value"])
    return int(np.argmax(probs))
