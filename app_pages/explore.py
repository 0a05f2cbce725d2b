import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages._shared import guarded, plain, plot_text, workspace
from pirl_core.data import image_cache, preprocess
from pirl_core.errors import PirlError
from pirl_core.evaluation import neighbours
from pirl_core.fmt import tail
from pirl_core.search import vectors
from pirl_core.training import pretraining

ws = workspace()
store = ws.store
PAGE_SIZE = 18

st.title("Explore")
st.caption("Look up the nearest neighbours of any image in what a pretrain run learned, see the whole set on a map, "
           "and find near-duplicates that would leak between training and test.")

runs = pretraining.runs(ws, with_checkpoint=True)
gone = pretraining.checkpoint_gone(ws)
if gone:
    st.caption(f"Not offered: run{'s' if len(gone) > 1 else ''} {', '.join(f'#{i}' for i in gone)}, whose checkpoint "
               "file was deleted.")
if not runs:
    st.info("No pretrain run with a checkpoint yet: start one on the Pretrain page.")
    st.stop()

c1, c2, c3 = st.columns(3)
run_id = c1.selectbox("Pretrain run", [r["id"] for r in runs], key="ex-run", format_func=lambda i: f"#{i}")
run = store.job(run_id)
space_name = c2.radio("Compare images by", ["bank", "features"], key="ex-space", horizontal=True,
                      format_func=lambda s: {"bank": "what PIRL remembered of each image",
                                             "features": "what the trained network sees"}[s],
                      help="The first uses the run's memory bank: PIRL's running average of each training image's "
                           "embedding. The second runs the final network (its backbone features) on any dataset.")
datasets = {d["id"]: d["name"] for d in store.datasets()}
if space_name == "bank":
    dataset_id = run["dataset_id"]
    c3.caption(f"Images: **{plain(datasets.get(dataset_id, '?'))}** (the run's own). The memory holds averages "
               "taken during training, so it lags the final network slightly.")
else:
    dataset_id = c3.selectbox("Images", list(datasets), index=list(datasets).index(run["dataset_id"])
                              if run["dataset_id"] in datasets else 0, format_func=datasets.get, key="ex-dataset")
k = st.slider("Neighbours (k)", 1, 30, 8, key="ex-k")

try:
    with st.spinner("Loading the run's vectors and their search index ..."):
        space = neighbours.load_space(ws, run_id, space_name, dataset_id)
except PirlError as exc:
    st.error(str(exc))
    st.stop()
if space.index_note:
    st.info(space.index_note)
if space.searcher().info.kind == "ivf":
    st.caption(f"Neighbours come from an {space.searcher().info.describe()}.")
rows = store.images(dataset_id)
position = {r["id"]: i for i, r in enumerate(rows)}


def _picked_position(point: dict) -> int | None:
    """The image position carried in a clicked map point's custom data (a list, or a dict keyed by index)."""
    data = point.get("customdata")
    if isinstance(data, dict):
        data = next(iter(data.values()), None)
    if isinstance(data, (list, tuple)):
        data = data[0] if data else None
    try:
        return int(data)
    except (TypeError, ValueError):
        return None


def thumbs(positions, captions):
    shown = list(image_cache.iter_thumbnails(ws, dataset_id, [rows[p] for p in positions]))
    st.image([t for _, t in shown], width=110, caption=captions)


labels = [r["label"] for r in rows]
if sum(lab is not None for lab in labels) > 10:
    with guarded("kNN agreement"):
        agreement = vectors.knn_agreement(space.vectors, labels, k=10)
        counts = pd.Series([lab for lab in labels if lab]).value_counts(normalize=True)
        st.metric("kNN agreement (k = 10)", f"{agreement:.1%}",
                  help="Share of each labeled image's 10 nearest neighbours that carry its label. "
                       f"Chance level for these classes is about {float((counts ** 2).sum()):.0%}.")

# The map and the pair grids are drawn only while their tab is open (a tab switch reruns the page): drawn hidden on
# every visit they made Explore the one page over 2 s under load (bench/soak.py).
pick, upload, atlas, dups = st.tabs(["Pick an image", "Upload an image", "Embedding map", "Near-duplicates"],
                                    key="ex-tab", on_change="rerun")
query = None
with pick:
    text = st.text_input("Filter by file name", key="ex-filter")
    matches = [i for i, r in enumerate(rows) if text.lower() in r["orig_name"].lower()]
    pages = max(1, -(-len(matches) // PAGE_SIZE))
    page_no = st.number_input(f"Page (of {pages})", 1, pages, 1, key="ex-page") if pages > 1 else 1
    window = matches[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]
    cols = st.columns(6)
    for n, (row, thumb) in enumerate(image_cache.iter_thumbnails(ws, dataset_id, [rows[p] for p in window])):
        with cols[n % 6]:
            st.image(thumb, caption=plain(tail(row["orig_name"], 20)), width=100)
            if st.button("Neighbours", key=f"ex-q-{row['id']}"):
                st.session_state["ex-query"] = row["id"]
with upload:
    file = st.file_uploader("An image (PNG, JPEG, TIFF, BMP, DICOM)", key="ex-upload")
    if file is not None:
        try:
            query = neighbours.embed_image(space, file.getvalue(), file.name)
            uploaded = preprocess.cache_row(file.getvalue(), file.name, 128)  # shown as the model saw it
            st.session_state.pop("ex-query", None)
        except PirlError as exc:
            st.error(f"{plain(file.name)}: {plain(exc)}")


@st.cache_data(max_entries=4, show_spinner="Projecting ...")
def _projection(space_key: tuple, method: str):
    """The map's coordinates; `space_key` names the workspace, run, space, dataset and checkpoint they come from."""
    return vectors.project(space.vectors, method)


@st.cache_data(max_entries=8, show_spinner="Finding copies in the pixels ...")
def _pixel_copies(root: str, dataset_id: int, n_images: int) -> list[dict]:
    """Near-copies from the pixels alone, positions as in the dataset's rows (the workspace folder and the image
    count are part of the key)."""
    return neighbours.pixel_copy_pairs(ws, dataset_id, store.images(dataset_id))


def show_pairs(found: list[dict], measure: str, none: str) -> None:
    """Pairs side by side, those straddling splits first (the first 12)."""
    if not found:
        st.caption(none)
        return
    st.caption(f"{len(found)} pair(s); straddling pairs first" + (", the first 12 shown." if len(found) > 12 else "."))
    for pair in sorted(found, key=lambda p: (not p["leak"], -p["similarity"]))[:12]:
        left, mid, right = st.columns([2, 1, 2])
        for col, side in ((left, "a"), (right, "b")):
            row, thumb = next(image_cache.iter_thumbnails(ws, dataset_id, [rows[pair[f"position_{side}"]]]))
            col.image(thumb, width=140, caption=f"{plain(tail(row['orig_name'], 30))} · "
                                                f"{pair['split_' + side] or 'no split'}")
        mid.metric(measure, f"{pair['similarity']:.3f}")
        if pair["leak"]:
            mid.caption(":material/warning: in different splits")


with atlas:
    if atlas.open:
        method = st.radio("Projection", ["pca", "tsne"], horizontal=True, key="ex-method",
                          format_func=lambda m: {"pca": "PCA (fast)", "tsne": "t-SNE (slower)"}[m])
        colour = st.radio("Colour by", ["label", "split"], horizontal=True, key="ex-colour")
        try:
            coords = _projection(space.key, method)
        except PirlError as exc:
            coords = None
            st.error(plain(exc))
        if coords is not None:
            frame = pd.DataFrame({"pos": range(len(rows)), "x": coords[:, 0], "y": coords[:, 1],
                                  "file": [plot_text(r["orig_name"]) for r in rows],
                                  "label": [plot_text(r["label"] or "unlabeled") for r in rows],
                                  "split": [r["split"] or "none" for r in rows]})
            fig = px.scatter(frame, x="x", y="y", color=colour, hover_name="file", custom_data=["pos"], height=520)
            fig.update_traces(marker={"size": 6})
            event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="ex-map")
            points = event.selection.points if event and event.selection else []
            picked = _picked_position(points[0]) if points else None
            if picked is not None and 0 <= picked < len(rows):
                st.session_state["ex-query"] = rows[picked]["id"]
            st.caption("Click a point to make it the query.")
with dups:
    if dups.open:
        threshold = st.slider("Similarity at least", 0.80, 1.0, 0.95, 0.005, key="ex-dup-threshold")
        pairs = neighbours.duplicate_pairs(space, rows, threshold)
        copies = _pixel_copies(str(ws.root), dataset_id, len(rows))
        leaks = [p for p in pairs + copies if p["leak"]]
        if leaks:
            st.warning(f"{len(leaks)} near-duplicate pair(s) straddle splits (e.g. train and test): they inflate test "
                       "AUCs on the Compare page. Consider grouping them (a CSV `group` column) or removing one.")
        st.markdown(f"**Alike in this representation**: {len(pairs)} pair(s) at similarity {threshold:.3f} or more.")
        show_pairs(pairs, "similarity", "No pair above this similarity.")
        st.markdown(f"**Copies in the pixels**: {len(copies)} pair(s), what the Data page counts and every split and "
                    "fold keeps together.")
        show_pairs(copies, "pixel likeness", "No copies in the pixels.")
        st.caption("Why the two lists differ: the pixel check compares small greyscale thumbnails, so it finds "
                   "re-exports, resizes and light crops of one picture whatever a network learned; the representation "
                   "compares what the network learned, so it also finds different images of look-alike tissue, and can "
                   "place two copies of one picture below the slider's similarity.")

if query is None and st.session_state.get("ex-query") in position:
    query = position[st.session_state["ex-query"]]
st.header("Neighbours")
if query is None:
    st.info("Pick an image, upload one, or click a point on the map.")
    st.stop()
if isinstance(query, int):
    label = f" · {plain(rows[query]['label'])}" if rows[query]["label"] else ""
    st.caption(f"Query: **{plain(rows[query]['orig_name'])}**{label}")
    thumbs([query], [plain(tail(rows[query]["orig_name"], 20))])
else:
    st.caption(f"Query: **{plain(file.name)}** (uploaded)")
    st.image(uploaded, width=110, caption=plain(tail(file.name, 20)))
hits = neighbours.search(space, query, k)
thumbs([h["position"] for h in hits],
       [f"#{h['rank']} · {h['similarity']:.3f} · {plain(tail(rows[h['position']]['orig_name'], 18))}"
        + (f" · {plain(rows[h['position']]['label'])}" if rows[h["position"]]["label"] else "") for h in hits])
st.caption("Cosine similarity: 1 = same direction in the representation, 0 = unrelated.")
