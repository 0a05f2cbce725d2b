import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages._shared import can_edit, guarded, plain, plot_text, when, workspace
from pirl_core.jobs import queue
from pirl_core.labeling import annotations, labeled_sets, simulate, strategies, suggestions
from pirl_core.training import pretraining

ws = workspace()
store = ws.store

st.title("Label")
st.caption("Spend an expert's labels where they count: the app suggests which images to label next, chosen in what a "
           "pretrain run learned from your own images (typical and varied ones first, then the ones the current "
           "model is unsure of, never two copies of one image). Every label is saved the moment it is given.")

RULES = {"auto": "Let the app decide (typical images first, then the ones the model is unsure of)",
         "typical": "Typical, varied images (best with few labels)",
         "uncertain": "Images the current model is unsure of",
         "random": "At random (the baseline)"}

pools = [d for d in store.datasets() if "from_labels" not in d["info"]]
pools.sort(key=lambda d: (not store.label_batches(d["id"]), d["kind"] != "unlabeled"))  # where labeling is under way
runs = pretraining.runs(ws, with_checkpoint=True)
if not pools:
    st.info("No images yet: import a folder of unlabeled images on the Data page first.")
    st.stop()
if not runs:
    st.info("No pretrain run with a checkpoint yet: start one on the Pretrain page. Its features choose the images.")
    st.stop()

by_id = {d["id"]: d for d in pools}
pool_id = st.selectbox("Images to label", list(by_id), format_func=lambda i: by_id[i]["name"], key="lb-pool")
pool = by_id[pool_id]
given = annotations.state(ws, pool_id)
batch = suggestions.batch(ws, pool_id)
item = suggestions.next_item(ws, batch) if batch else None  # this annotator's next image, read once a run
images = {im["id"]: im for im in store.images(pool_id)}

c1, c2, c3 = st.columns(3)
c1.metric("Agreed labels", len(given.labels), help="Images every annotator who labeled them gave the same class.")
c2.metric("Annotators", len(given.annotators))
c3.metric("Disagreements", len(given.conflicts), help="Images two annotators labeled differently; they are left out "
          "of the labeled set until settled.")

if can_edit():
    with st.expander("Suggest a batch", expanded=item is None):
        with st.form("lb-suggest"):
            f1, f2 = st.columns(2)
            run_id = f1.selectbox("Pretrain run", [r["id"] for r in runs], key="lb-run",
                                  format_func=lambda i: f"#{i} ({store.dataset(store.job(i)['dataset_id'])['name']})"
                                  if store.dataset(store.job(i)["dataset_id"]) else f"#{i}")
            n = f2.number_input("How many images", 1, 200, 20, key="lb-n")
            known = {d["name"]: sorted(store.class_counts(d["id"])) for d in store.datasets()
                     if d["kind"] == "labeled"}
            source = st.selectbox("Classes", ["as typed below", *known], key="lb-classes-from",
                                  format_func=lambda k: k if k == "as typed below" else f"those of {k}")
            typed = ", ".join(batch.classes) if batch else ""
            classes_text = st.text_input("Classes, separated by commas", key="lb-classes", value=typed,
                                         placeholder="e.g. benign, malignant")
            if source in known:
                classes_text = ",".join(known[source])
            rule = st.radio("Choose", list(RULES), format_func=RULES.get, key="lb-rule")
            if st.form_submit_button("Suggest", type="primary"):
                with guarded("Suggesting"), st.spinner("Choosing images ..."):
                    suggestions.suggest(ws, pool_id, run_id, int(n), classes_text.split(","), rule)
                    st.rerun()


def _answer(image_id: int, label: str | None, classes: list[str], batch_id: int) -> None:
    with guarded("Saving the label"):
        annotations.record(ws, pool_id, image_id, label, classes, batch_id)


def _undo(batch_id: int) -> None:
    with guarded("Undo"):
        annotations.undo(ws, pool_id, batch_id)


if batch is not None:
    st.subheader(f"Batch {batch.id}")
    done = len(suggestions.answered(ws, batch))
    st.progress(done / len(batch.items), text=f"{done} of {len(batch.items)} answered by you · chosen as "
                f"{plain(RULES.get(batch.strategy, batch.strategy).lower())} · suggested by {plain(batch.created_by)} "
                f"on {when(batch.created_at)}")
    if item is None:
        st.success("This batch is done. Turn the labels into a labeled set and compare, or suggest the next batch.")
    elif can_edit():
        image = images[item["image_id"]]
        left, right = st.columns([3, 2])
        with left:
            st.image(suggestions.picture(ws, image), caption=plain(image["orig_name"]))
            st.caption(f"Why this one: {plain(item['reason'])}.")
        with right:
            st.markdown("**Which class?** Keys 1 to 9 pick a class, S skips, U takes back your last label.")
            for k, name in enumerate(batch.classes):
                st.button(f"{k + 1} · {plain(name)}", key=f"lb-class-{k}", on_click=_answer,
                          args=(item["image_id"], name, batch.classes, batch.id),
                          shortcut=str(k + 1) if k < 9 else None, type="primary", width="stretch")
            b1, b2 = st.columns(2)
            b1.button("Not sure (S)", key="lb-skip", on_click=_answer,
                      args=(item["image_id"], None, batch.classes, batch.id), shortcut="s",
                      width="stretch")
            b2.button("Undo (U)", key="lb-undo", on_click=_undo, args=(batch.id,), shortcut="u", width="stretch",
                      disabled=done == 0)
            near = suggestions.labeled_neighbours(ws, batch, item["image_id"])
            if near:
                st.markdown("**Most similar images already labeled**")
                cols = st.columns(len(near))
                for col, hit in zip(cols, near):
                    col.image(suggestions.picture(ws, hit["image"], 160),
                              caption=f"{plain(hit['label'])} · similarity {hit['similarity']:.2f}")
    else:
        st.info("Viewers see the progress of labeling; an editor gives the labels.")

if given.conflicts:
    st.subheader("Disagreements")
    st.dataframe(pd.DataFrame([{"image": images[i]["orig_name"],
                                **{f"label by {who}": lab for who, lab in answers.items()}}
                               for i, answers in given.conflicts.items()]), hide_index=True)
    st.caption("Settle each by having the annotators agree: the latest label each of them gave counts.")

st.subheader("What the labels buy")
if can_edit() and given.labels:
    run_for_compare = st.selectbox("Compare with pretrain run", [r["id"] for r in runs], key="lb-cmp-run",
                                   format_func=lambda i: f"#{i}")
    if st.button(f"Build a labeled set of the {len(given.labels)} agreed labels and compare", key="lb-build"):
        with guarded("Building the labeled set"), st.spinner("Importing the labeled images ..."):
            report = labeled_sets.build(ws, pool_id)
            for text in report.warnings:
                st.warning(plain(text))
            labeled_sets.compare_now(ws, report.dataset, run_for_compare)
            st.success(f"Comparing every start on {plain(report.dataset)}: the curve below fills in as it finishes.")
points = labeled_sets.curve(ws, pool_id)
if points:
    fig = go.Figure()
    for start in sorted({p["start"] for p in points}):
        mine = [p for p in points if p["start"] == start]
        fig.add_trace(go.Scatter(
            x=[p["labels"] for p in mine], y=[p["auc"] for p in mine], name=plot_text(start), mode="lines+markers",
            error_y={"type": "data", "symmetric": False, "array": [p["ci_high"] - p["auc"] for p in mine],
                     "arrayminus": [p["auc"] - p["ci_low"] for p in mine]}))
    fig.update_layout(xaxis_title="labels spent", yaxis_title="test AUC (95% interval)", height=360,
                      yaxis_range=[0.4, 1.0])
    st.plotly_chart(fig)
    best = max(points, key=lambda p: (p["labels"], p["auc"]))
    st.markdown(f"With **{best['labels']}** labels the best start, {plain(best['start'])}, reaches an AUC of "
                f"**{best['auc']:.2f}** (95% interval {best['ci_low']:.2f} to {best['ci_high']:.2f}).")
else:
    st.caption("No comparison on these labels yet: after a batch, build a labeled set and compare.")

st.subheader("How the ways of choosing compare")
st.caption("A simulated annotator, on a labeled set you already have: each way of choosing asks for labels in "
           f"batches of {simulate.BATCH}, the known labels answer, and the linear probe is scored on held-out images "
           f"({simulate.SEEDS} repetitions). The same code as bench/label_efficiency.py.")
labeled_options = [d for d in store.datasets() if d["kind"] == "labeled"]
sims = store.jobs(kind="label_simulation")
if can_edit() and labeled_options:
    s1, s2 = st.columns(2)
    sim_ds = s1.selectbox("Labeled set", [d["id"] for d in labeled_options], key="lb-sim-ds",
                          format_func=lambda i: next(d["name"] for d in labeled_options if d["id"] == i))
    sim_run = s2.selectbox("Pretrain run", [r["id"] for r in runs], key="lb-sim-run", format_func=lambda i: f"#{i}")
    if st.button("Simulate", key="lb-simulate"):
        with guarded("Starting the simulation"):
            simulate.start_simulation(ws, sim_ds, sim_run)
            st.rerun()


def simulations() -> None:
    jobs = store.jobs(kind="label_simulation")
    for job in (j for j in jobs if j["status"] in queue.ACTIVE):
        st.progress(job["progress"], text=plain(job["message"] or "waiting for the worker"))
    done_sims = [j for j in jobs if j["status"] == "succeeded"]
    if not done_sims:
        return
    result, cfg = queue.result_of(done_sims[0]), queue.config_of(done_sims[0])
    curves = simulate.Curves(result.budgets, result.strategies, result.n_pool, result.n_test, result.notes)
    fig = go.Figure()
    for name in curves.strategies:
        fig.add_trace(go.Scatter(x=curves.budgets, y=curves.mean(name), name=plot_text(RULES[name].split(" (")[0]),
                                 mode="lines+markers", error_y={"type": "data", "array": curves.spread(name)}))
    fig.update_layout(xaxis_title="labels", yaxis_title="test AUC (mean ± SD over repetitions)", xaxis_type="log",
                      height=360)
    st.plotly_chart(fig, key=f"sim-{done_sims[0]['id']}")
    ds_name = (store.dataset(cfg.dataset_id) or {}).get("name", "?")
    reached = [r for r in simulate.half_the_labels(curves, "auto") if r["reached"]]
    st.markdown(f"On **{plain(ds_name)}** (pool of {curves.n_pool}, {curves.n_test} held out), letting the app "
                "choose " + (f"reached with {reached[0]['half']} labels the AUC that {reached[0]['labels']} random "
                             "labels reach." if reached else "did not reach, with half the labels, what random "
                                                             "choice reaches."))
    for text in curves.notes:
        st.caption(plain(text))


if any(j["status"] in queue.ACTIVE for j in sims):
    st.fragment(run_every=5)(simulations)()  # redrawn as the job advances
else:
    simulations()
st.caption(f"Cold start until every class has {strategies.COLD_LABELS_PER_CLASS} labels.")
