import hashlib
import io
import os

import pandas as pd
import streamlit as st

from app_pages._shared import guarded, plain, workspace
from pirl_core.errors import PirlError
from pirl_core.fmt import csv_safe, tail
from pirl_core.models import predict

ws = workspace()

st.title("Predict")
st.caption("Run a finetuned model on new images: the probability of each class, the decision, and a heatmap of "
           "where the model looked (Grad-CAM: red regions drove the decision most).")

sources = predict.sources(ws)
if not sources:
    st.info("No finetuned model yet: run a comparison on the Compare page (or export one), then come back.")
    st.stop()
labels = {s["key"]: s["label"] for s in sources}
key = st.selectbox("Model", list(labels), format_func=labels.get, key="pr-model")


@st.cache_resource(max_entries=2, show_spinner="Loading the model ...")
def _model(root: str, key: str, stamp: float) -> predict.Model:
    return predict.load(ws, key)


try:
    ref = key.partition(":")[2]
    model = _model(str(ws.root), key, os.path.getmtime(ref) if key.startswith("bundle:") else 0.0)
except PirlError as exc:
    st.error(plain(exc))
    st.stop()
st.caption(f"{plain(model.description)}. Classes: {', '.join(plain(c) for c in model.classes)}.")
if model.signature and not model.trusted:
    st.warning(f"This bundle is {plain(model.signature)}. Use its predictions only if you know where it came from "
               "(a colleague's key goes in the workspace's keys/trusted/ folder).", icon=":material/gpp_maybe:")
elif model.signature:
    st.caption(f"Bundle {plain(model.signature)}.")
if model.threshold:
    st.caption(f"Decision: '{plain(model.classes[1])}' when its probability is at least "
               f"{model.threshold['value']:.2f}, {plain(model.threshold['how'])}.")
else:
    st.caption("Decision: the most probable class.")

folder = st.radio("Choose", ["images", "a folder"], horizontal=True, key="pr-what") == "a folder"
files = st.file_uploader("A folder of images (PNG, JPEG, TIFF, BMP, DICOM)" if folder else
                         "Images (PNG, JPEG, TIFF, BMP, DICOM)", key=f"pr-files-{folder}",
                         accept_multiple_files="directory" if folder else True)
if not files:
    st.stop()


@st.cache_resource
def _recent() -> dict:
    """The last few results, so that a toggle or a download does not predict again."""
    return {}


named = [(f.name, f.getvalue()) for f in files]
digest = (str(ws.root), key,
          hashlib.sha256(b"".join(hashlib.sha256(d).digest() + n.encode() for n, d in named)).hexdigest())
recent = _recent()
if digest not in recent:
    bar = st.progress(0.0, text=f"Predicting {len(named)} image(s) ...")
    with guarded("Prediction"):
        result = predict.predict(model, named, lambda done, total: bar.progress(
            done / total, text=f"Predicted {done} of {total} (with heatmaps)"))
        while len(recent) >= 4:
            recent.pop(next(iter(recent)))
        recent[digest] = result
    bar.empty()
if digest not in recent:
    st.stop()
result = recent[digest]

if result.skipped:
    st.warning(f"{len(result.skipped)} file(s) could not be read and were skipped.")
    st.dataframe(pd.DataFrame(result.skipped), hide_index=True)
if not result.rows:
    st.stop()
table = pd.DataFrame(result.rows)
counts = table["decision"].value_counts()
st.success(f"{len(table)} image(s): " + ", ".join(f"{n} called {plain(c)}" for c, n in counts.items()) + ".")
if model.synthetic:
    st.warning("This model was trained on synthetic demo images, not on patient scans: what it calls a real image "
               "means nothing.", icon=":material/science:")
far, known = int(table["unlike its training images"].sum()), int(table["one of its training images"].sum())
if far:
    st.warning(f"{far} of {len(table)} image(s) look unlike the images this model was trained on (in its own "
               "features, further out than 99 in 100 of those): another modality, machine or protocol? Do not "
               "trust its probabilities for them.", icon=":material/help:")
if known:
    st.info(f"{known} image(s) are among this model's own training images: its answer for them says nothing about "
            "how it does on new images.")
st.dataframe(table, hide_index=True, column_config={
    c: st.column_config.ProgressColumn(c, min_value=0.0, max_value=1.0, format="%.3f")
    for c in table.columns if c.startswith("p(")})
buf = io.StringIO()
table.map(csv_safe).to_csv(buf, index=False)
st.download_button("Download the table (CSV)", buf.getvalue(), "predictions.csv", "text/csv", key="pr-csv",
                   on_click="ignore")

st.subheader("Where the model looked")
show_heat = st.toggle("Heatmaps", value=True, key="pr-heat")
per_row = 4
for start in range(0, len(result.rows), per_row):
    cols = st.columns(per_row)
    for col, row, image, heat in zip(cols, result.rows[start:start + per_row], result.images[start:start + per_row],
                                     result.heatmaps[start:start + per_row]):
        col.image(predict.overlay(image, heat) if show_heat else image, width="stretch",
                  caption=f"{plain(tail(row['file'], 28))} · {plain(row['decision'])} "
                          f"(p {predict.decided_probability(row):.2f})"
                          + (" · no region stood out" if show_heat and heat.max() <= 0 else ""))
