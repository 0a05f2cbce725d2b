from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages._shared import editors_only, guarded, when, workspace
from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from pirl_core.models import export
from pirl_core.training import pretraining

ws = workspace()
store = ws.store

st.title("Export")
if not editors_only("Exporting a model"):
    st.stop()
st.caption("Take a finetuned model away as one zip: TorchScript, ONNX, plain weights and a model card. "
           "A colleague runs `pirl predict --model bundle.zip images/...` with nothing else.")

def _trained_on(job: dict) -> str:
    """Which model a bundle packages: one fold's model, or the fixed split's, with its training images."""
    runs = queue.result_of(job).runs
    if not runs:
        return "–"
    top = max(r["fraction"] for r in runs)
    first = next(r for r in runs if r["fraction"] == top)  # the packaged model: the first with all its labels
    where = f"fold {first['fold'] + 1} of {queue.config_of(job).folds}" if first["fold"] is not None else "fixed split"
    return f"{where}, {first['n_train']} images"


scores = compare.scores_by_job(ws)
done = [j for j in store.jobs(kind="finetune", statuses=["succeeded"]) if queue.result_of(j).model]
if not done:
    st.info("No finished finetune yet: run a comparison on the Compare page.")
else:
    st.dataframe(pd.DataFrame([{
        "job": j["id"], "initialisation": queue.config_of(j).label, "mode": queue.config_of(j).finetune.mode,
        "dataset": queue.config_of(j).labeled,
        "trained on": _trained_on(j),
        "test AUC (95% CI)": (f"{scores[j['id']]['auc']:.3f} ({scores[j['id']]['ci_low']:.3f}–"
                              f"{scores[j['id']]['ci_high']:.3f})") if j["id"] in scores else "–",
        "finished": when(j["finished_at"])} for j in done]), hide_index=True)
    job_id = st.selectbox("Model to export", [j["id"] for j in done], key="export-job",
                          format_func=lambda i: f"#{i} · {store.job(i)['config']['label']}")
    if st.button("Build bundle", type="primary", key="export-build"):
        with guarded("Export"), st.spinner("Exporting and checking TorchScript and ONNX against the model ..."):
            info = export.export_finetune(ws, job_id)
            st.success(f"Bundle ready: TorchScript and ONNX agree with the workspace model on "
                       f"{info['test_images']} test images (max probability difference "
                       f"{max(info['max_abs_prob_diff_torchscript'], info['max_abs_prob_diff_onnx']):.1e}).")

runs = pretraining.runs(ws, with_checkpoint=True)
if runs:
    with st.expander("Export a PIRL-pretrained backbone alone (its weights, for use in your own code)"):
        st.caption("A .pth file with the pretrained network's weights, without a classifier: load it into the "
                   "torchvision model of the same name to start your own training from PIRL features.")
        run_id = st.selectbox("Pretrain run", [r["id"] for r in runs], key="export-run", format_func=lambda i: f"#{i}")
        if st.button("Export backbone", key="export-backbone"):
            with guarded("Export"):
                path = export.export_backbone(ws, run_id)
                st.success(f"Saved {Path(path).name}; load it with `model.load_state_dict(torch.load(path), "
                           "strict=False)`.")

st.header("Exports")
exports = [e for e in store.exports() if Path(e["path"]).exists()]
if not exports:
    st.caption("Nothing exported yet.")
else:
    st.dataframe(pd.DataFrame([{
        "file": Path(e["path"]).name, "what": e["info"].get("label", e["info"].get("kind")),
        "test AUC": round(e["info"]["test_metrics"]["auc"], 3) if e["info"].get("test_metrics") else None,
        "MB": round(Path(e["path"]).stat().st_size / 1e6, 1), "exported": when(e["created_at"])}
        for e in exports]), hide_index=True)
    by_id = {e["id"]: e for e in exports}
    chosen = st.selectbox("File", list(by_id), key="export-file", format_func=lambda i: Path(by_id[i]["path"]).name)
    path = Path(by_id[chosen]["path"])
    # The file is read only when the button is clicked: passing its bytes would send the whole bundle to the
    # browser on every visit (a stuck connection per visit, until the browser stalled).
    st.download_button(f"Download {path.name}", path.read_bytes, path.name, key="export-download", on_click="ignore",
                       mime="application/zip" if path.suffix == ".zip" else "application/octet-stream")
