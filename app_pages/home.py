import pandas as pd
import streamlit as st

from app_pages._shared import JOB_NAMES, STATUS_ICON, can_edit, when, workspace
from pirl_core import demo
from pirl_core.access import audit
from pirl_core.jobs.queue import ACTIVE

ws = workspace()
store = ws.store

st.title("PIRL Studio")
st.markdown(
    "Learn from your **unlabeled** medical images with PIRL self-supervised pretraining, then  \n"
    "finetune on a **small labeled set** and see whether it beats training from scratch and from ImageNet,  \n"
    "all on this machine: no image leaves it."
)
if can_edit():  # a server path: editors only
    st.caption(f"Workspace: `{ws.root}`")

STEPS = [("app_pages/data.py", "1 · Bring in images", ":material/photo_library:"),
         ("app_pages/pretrain.py", "2 · Pretrain with PIRL", ":material/model_training:"),
         ("app_pages/label.py", "3 · Label what counts", ":material/label:"),
         ("app_pages/compare.py", "4 · Compare initialisations", ":material/monitoring:"),
         ("app_pages/explore.py", "5 · Explore neighbours", ":material/travel_explore:"),
         ("app_pages/predict.py", "6 · Predict new images", ":material/image_search:"),
         ("app_pages/export.py", "7 · Export a model", ":material/download:")]
for row in (STEPS[:4], STEPS[4:]):  # two rows: every step's name whole
    for col, (page, label, icon) in zip(st.columns(4), row):
        with col:
            try:
                st.page_link(page, label=label, icon=icon)
            except Exception:  # the page is run on its own (tests), or hidden from a viewer
                st.markdown(label)

own = [d for d in store.datasets() if d["name"] not in (demo.POOL, demo.LABELED)]
if store.dataset(demo.POOL) and store.dataset(demo.LABELED) and own:
    st.caption(f"Beside your own images, the demo's synthetic sets ({demo.POOL}, {demo.LABELED}) are still here; "
               "delete them on the Data page once you no longer need them.")
elif store.dataset(demo.POOL) and store.dataset(demo.LABELED):
    st.info(f"This workspace holds synthetic demo images, not patient data: **{demo.POOL}** (unlabeled, for "
            f"pretraining) and **{demo.LABELED}** (benign vs malignant, for comparing initialisations). First, "
            "watch the demo pipeline below finish, then open Compare to read its verdict; then bring your own "
            "images on the Data page.\n\nWhat the demo shows: the whole flow (a PIRL run that learns, the "
            "comparison with training from scratch and from ImageNet, an exported model) in a few minutes. What it "
            "cannot show: whether PIRL helps on your scans. Synthetic lesions are easy for ImageNet features alone, "
            "and a 400-image pool pretrains for minutes, not hours; only your own images can answer that.",
            icon=":material/science:")
@st.fragment(run_every=3)
def now() -> None:
    """The demo pipeline, the counts, the datasets and the jobs, redrawn every few seconds like the sidebar."""
    pipeline = demo.pipeline_status(ws)
    if pipeline:
        st.subheader("Demo pipeline")
        for step in pipeline:
            icon = STATUS_ICON.get(step["status"], ":material/schedule:")
            st.markdown(f"{icon} {step['step']}: **{step['status']}**")

    datasets = store.datasets()
    jobs = store.jobs()
    running = [j for j in jobs if j["status"] in ACTIVE]

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Datasets", len(datasets))
    distinct = store.distinct_images()
    c2.metric("Images", distinct, help="Each image counted once, however many datasets hold it.")
    c3.metric("Jobs running / queued", len(running))
    c4.metric("Exported models", len(store.exports()))

    st.subheader("Datasets")
    if datasets:
        st.dataframe(
            pd.DataFrame([{"name": d["name"], "images": d["images"], "labeled": d["labeled"],
                           "added": when(d["created_at"])} for d in datasets]),
            hide_index=True)
    else:
        st.info("No datasets yet. Bring in a folder of images to start.")

    st.subheader("Jobs")
    if jobs:
        st.dataframe(
            pd.DataFrame([{"id": j["id"], "kind": JOB_NAMES.get(j["kind"], j["kind"]), "status": j["status"],
                           "progress": f"{100 * (j['progress'] or 0):.0f}%", "started": when(j["started_at"]),
                           "finished": when(j["finished_at"])} for j in jobs]),
            hide_index=True)
    else:
        st.info("No training jobs yet.")



now()
exports = store.exports()
st.subheader("Models")
if exports:
    st.dataframe(pd.DataFrame([{"id": e["id"], "job": e["job_id"], "file": e["path"],
                                "exported": when(e["created_at"])} for e in exports]),
                 hide_index=True)
else:
    st.info("No exported models yet.")

if can_edit():
    with st.expander("Audit log: who did what, and when"):
        entries = audit.entries(ws, 200)
        if entries:
            st.dataframe(pd.DataFrame([{"when": when(e["time"]), "who": e["actor"], "action": e["action"],
                                        "what": e["target"], "detail": e["detail"]} for e in entries]),
                         hide_index=True)
        else:
            st.caption("Nothing recorded yet.")
        st.caption("The same log from the command line: `pirl audit`.")
