import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages._shared import STATUS_ICON, can_edit, guarded, plain, plot_text, when, workspace
from pirl_core.data import image_cache
from pirl_core.errors import PirlError
from pirl_core.evaluation import compare
from pirl_core.evaluation.statistics import (
    calibration,
    errors_at,
    format_p,
    roc_area,
    threshold_metrics,
    youden_threshold,
)
from pirl_core.fmt import csv_safe, duration, tail
from pirl_core.jobs import queue
from pirl_core.models import predict
from pirl_core.training import measured, planning, pretraining

ws = workspace()
store = ws.store
queue.reap(ws)

st.title("Compare")
st.caption("Does PIRL pretraining beat training from scratch and from ImageNet weights on your labeled images? "
           "Every initialisation gets the same images, splits, epochs, optimiser and seed.")

labeled = [d for d in store.datasets() if d["labeled"]]
runs = pretraining.runs(ws, with_checkpoint=True)
if not labeled or not runs:
    st.info("A comparison needs a labeled dataset (Data page) and a pretrain run with a checkpoint (Pretrain page).")
    st.stop()


def run_label(job_id: int) -> str:
    job = store.job(job_id)
    c = queue.config_of(job)
    start = "ImageNet start" if c.pretrained_imagenet else "random start"
    return f"#{job_id} · {c.backbone} {c.image_size} px · {c.pretext} · {start} · {job['status']}"


imagenet_problem = st.cache_data(ttl=600, show_spinner="Checking for ImageNet weights ...")(compare.imagenet_problem)
first_run = store.job((st.session_state.get("cmp-runs") or [runs[0]["id"]])[0])
backbone = queue.config_of(first_run).backbone
problem = imagenet_problem(backbone)
runnable = [i for i in compare.INITS if not (problem and i.startswith("imagenet"))]  # what can run here

with st.form("compare", enter_to_submit=False):  # jobs start from the button only
    c1, c2 = st.columns(2)
    by_name = {d["name"]: d for d in labeled}
    dataset = c1.selectbox("Labeled images", list(by_name), key="cmp-dataset",
                           format_func=lambda n: f"{n} ({by_name[n]['labeled']} labeled)")
    chosen_runs = c2.multiselect("PIRL pretrain run(s)", [r["id"] for r in runs], default=[runs[0]["id"]],
                                 format_func=run_label, key="cmp-runs",
                                 help="Several runs (e.g. different pretexts) each get their own PIRL line.")
    together = c2.checkbox("Also read the chosen ImageNet+PIRL runs together (linear probe)", value=True,
                           key="cmp-together", help=measured.together_sentence())
    mode = c1.radio("Training", ["linear", "finetune"], horizontal=True, key="cmp-mode",
                    format_func=lambda m: {"linear": "Linear probe (frozen backbone, fast)",
                                           "finetune": "Full finetune (slower)"}[m])
    inits = c2.multiselect("Initialisations", list(compare.INITS), default=runnable, key="cmp-inits",
                           help=measured.side_by_side_sentence())
    n_labeled = by_name[dataset]["labeled"]
    counts = store.class_counts(by_name[dataset]["id"])
    auto = compare.default_folds(n_labeled)
    folds = c1.number_input(f"Cross-validation folds (0 = fixed train/val/test split; suggested {auto})", 0, 10,
                            auto, key="cmp-folds")
    fractions = c2.multiselect("Label fractions (label-efficiency curve)", list(compare.SMALL_SET_FRACTIONS),
                               default=compare.default_fractions(counts), key="cmp-fractions",
                               format_func=lambda f: f"{f:.0%}",
                               help="Each fraction trains every start again on that share of the training labels "
                                    "(the same images for every start). The low end is where labels are scarce.")
    fits = compare.fits_per_arm(auto, compare.default_repeats("linear", auto, n_labeled),
                                len(compare.default_fractions(counts)))
    st.caption(f"Cost: each start fits one model per fold, repeat and label fraction: with the suggested settings "
               f"{fits} linear probes per start (seconds each on a CPU); full finetuning is limited to "
               f"{compare.MAX_FINETUNES_PER_ARM} networks per start.")
    epochs = c1.number_input("Full finetune: epochs (0 = default 20)", 0, 1000, 0, key="cmp-epochs",
                             help="The linear probe has no epochs: a regularised logistic regression is fitted "
                                  "exactly, its strength chosen by cross-validation on the training images.")
    go_button = st.form_submit_button("Compare", type="primary")

if problem:
    st.caption(f":material/info: ImageNet starts are unticked: this machine has no ImageNet weights for {backbone} "
               "(efficientnet_lite0 has them built in).", help=plain(problem))
has_imagenet_run = any(queue.config_of(r).pretrained_imagenet and queue.config_of(r).backbone == backbone for r in runs)
if not has_imagenet_run and not problem and can_edit():
    st.caption("ImageNet+PIRL (PIRL continued from ImageNet weights) beat ImageNet transfer in dermatology "
               "(Azizi et al., ICCV 2021). No such run exists for this backbone yet.")
    if st.button("Start an ImageNet+PIRL pretrain run with the same settings", key="cmp-start-inet"):
        with guarded("Starting the run"):
            job_id = pretraining.start_like(ws, first_run["id"], pretrained_imagenet=True)
            st.success(f"Queued pretrain run #{job_id}; choose it here when it has finished.")

one_run = pretraining.to_read_together(ws, backbone) if can_edit() else None
if one_run is not None:
    n_pool = store.dataset(one_run["dataset_id"])["n_images"]
    st.caption(f"A second ImageNet+PIRL run like #{one_run['id']}, with another seed, can be read together with it: "
               "runs of one recipe differ by chance, most with few labels, and together that evens out. It takes "
               f"about {duration(planning.estimate_seconds(store, queue.config_of(one_run), n_pool)[0])} with nothing "
               "else using the processor.",
               help=measured.together_sentence())
    if st.button(f"Start a second run like #{one_run['id']} with another seed", key="cmp-start-seed"):
        with guarded("Starting the run"):
            job_id = pretraining.start_another_seed(ws, one_run["id"])
            st.success(f"Queued pretrain run #{job_id}; choose it here with #{one_run['id']} when it has finished.")

if go_button:
    with guarded("Starting the comparison"):
        cid = compare.start(ws, compare.CompareRequest(
            labeled=dataset, pretrain_jobs=chosen_runs, mode=mode, inits=inits, folds=int(folds),
            fractions=fractions or [1.0], epochs=int(epochs) or None, together=together))
        st.session_state["cmp-open"] = cid
        st.success(f"Comparison #{cid} queued: one job per initialisation.")

past = compare.comparisons(ws)
if not past:
    st.stop()
st.header("Results")
ids = [c["id"] for c in past]
open_id = st.selectbox("Comparison", ids, key="cmp-open", format_func=lambda i: next(
    f"#{c['id']} · {c['result']['config']['labeled']} · {c['result']['request']['mode']} · "
    f"{c['result']['config']['folds'] or 'fixed split'}{' folds' if c['result']['config']['folds'] else ''} · "
    f"{when(c['result']['created'])}" for c in past if c["id"] == i))


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def colours(arms: list[str]) -> dict[str, str]:
    """One colour per initialisation, the same in every chart of a comparison."""
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def roc_figure(table: list[dict], cls: int) -> go.Figure:
    colour = colours([e["arm"] for e in table])
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "lightgray"},
                    name="chance", hoverinfo="skip")
    for entry in table:
        roc = entry["roc"][str(cls)] if str(cls) in entry["roc"] else entry["roc"][cls]
        fig.add_scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", line={"color": colour[entry["arm"]]},
                        name=f"{entry['arm']} (AUC {roc_area(roc):.3f})")  # this class's, not the macro
    fig.update_layout(xaxis_title="1 - specificity (false positive rate)",
                      yaxis_title="sensitivity (true positive rate)", height=460,
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 30})
    return fig


@st.fragment(run_every=3)
def show(comparison_id: int) -> None:
    comp = compare.comparison(ws, comparison_id)
    summary = compare.summarize(ws, comparison_id, n_boot=1000 if all(
        store.job(a["job_id"])["status"] in queue.FINISHED for a in comp["arms"]) else 200)
    for note in comp["notes"]:
        st.warning(note)
    if not summary["complete"]:
        for arm in summary["arms"]:
            st.progress(min(1.0, arm["progress"] or 0.0),
                        text=f"{arm['label']}: {arm['status']} · {arm['message'] or 'waiting for the worker'}")
        curves = go.Figure()
        colour = colours([arm["label"] for arm in summary["arms"]])
        for arm in summary["arms"]:
            rows = store.metrics(arm["job_id"], ["val_auc"])
            curves.add_scatter(x=[r["step"] for r in rows], y=[r["value"] for r in rows], name=arm["label"],
                               mode="lines+markers", line={"color": colour[arm["label"]]})
        if compare.comparison_config(comp).finetune.mode == "linear":  # a probe has no epochs: one fit each
            curves.update_layout(title="Each linear probe fitted so far: its inner cross-validated AUC",
                                 xaxis_title="probes fitted (one per fold and share of the labels, in order)",
                                 yaxis_title="inner CV AUC", height=320)
        else:
            curves.update_layout(title="Validation AUC while training", xaxis_title="epoch (all folds in order)",
                                 yaxis_title="val AUC", height=320)
        st.plotly_chart(curves, key=f"live-{comparison_id}")
    for arm in summary["arms"]:
        if arm["status"] in ("failed", "interrupted"):
            st.error(f"{arm['label']} {arm['status']}: {plain(arm['message'])}")
    table = summary["table"]
    if not table:
        return
    if summary["complete"]:
        show_as = {"better": st.success, "worse": st.warning, "unclear": st.info, "not learned": st.warning}
        for v in summary.get("verdicts", []):
            show_as[v["outcome"]](v["text"], icon=":material/balance:")
    for reading in summary.get("labels_saved", []) if summary["complete"] else []:
        st.info(reading["sentence"], icon=":material/savings:")
    for e in table:
        if e.get("chance"):
            st.warning(f"{e['arm']}: AUC {e['auc']:.3f}, 95% CI {e['ci_low']:.3f} to {e['ci_high']:.3f} holds 0.5: "
                       "not better than chance on these images.", icon=":material/warning:")
    classes = summary["classes"]
    cls = 1
    if len(classes) > 2:
        cls = st.selectbox("ROC of class (one vs rest)", range(len(classes)), format_func=lambda i: classes[i],
                           key=f"cls-{comparison_id}")
    left, right = st.columns([3, 2])
    left.plotly_chart(roc_figure(table, cls), key=f"roc-{comparison_id}-{cls}")
    level = int(table[0]["level"] * 100)
    rows = []
    for e in table:
        row = {"initialisation": e["arm"], "AUC": round(e["auc"], 3),
               f"{level}% CI": f"{e['ci_low']:.3f} – {e['ci_high']:.3f}", "test images": e["n"]}
        if e["fold_sd"] is not None:
            row["fold AUCs (sd)"] = f"{', '.join(f'{a:.2f}' for a in e['fold_aucs'])} ({e['fold_sd']:.3f})"
        for other, test in (e.get("vs") or {}).items():
            row[f"vs {other}"] = (f"{test['difference']:+.3f} [{test['ci_low']:+.3f}, {test['ci_high']:+.3f}], "
                                  f"p {format_p(test['p_value'], 2000)}")
        rows.append(row)
    right.dataframe(pd.DataFrame(rows), hide_index=True)
    right.caption(("Macro one-vs-rest AUC. " if len(classes) > 2
                   else f"AUC for '{plain(classes[1])}' (the positive class: set it on the Data page) vs "
                        f"'{plain(classes[0])}'. ")
                  + "CI: stratified bootstrap of the test images; vs: paired AUC difference [95% CI] and p from a "
                  "paired bootstrap on the same images. "
                  + ("Out-of-fold predictions pooled over the folds (mean over repeated k-fold). "
                     if table[0]["fold_sd"] is not None else "")
                  + "Copies and near-copies of an image always share a fold.")

    at_threshold(comp, summary, table, classes, cls, comparison_id)

    fractions = sorted(float(f) for f in table[0]["efficiency"])
    if len(fractions) > 1:
        eff = go.Figure()
        for e in table:
            ci = e.get("efficiency_ci", {})
            eff.add_scatter(x=[f * 100 for f in fractions], y=[e["efficiency"][str(f)] for f in fractions],
                            mode="lines+markers", name=e["arm"], line={"color": colours(
                                [x["arm"] for x in table])[e["arm"]]}, error_y={
                                "type": "data", "visible": bool(ci),
                                "array": [ci[str(f)][1] - e["efficiency"][str(f)] for f in fractions] if ci else [],
                                "arrayminus": [e["efficiency"][str(f)] - ci[str(f)][0] for f in fractions] if ci
                                else []})
        eff.add_hline(y=0.5, line_dash="dash", line_color="lightgray", annotation_text="chance")
        eff.update_layout(title="Label efficiency: test AUC (95% CI) against the share of training labels used",
                          xaxis_title="% of training labels", yaxis_title="test AUC", height=360)
        st.plotly_chart(eff, key=f"eff-{comparison_id}")
        for reading in summary.get("labels_saved", []):
            st.markdown(f"**{plain(reading['arm'])} against {plain(reading['baseline'])}, fraction by fraction**")
            st.dataframe(pd.DataFrame(_saved_rows(reading)), hide_index=True)
        if summary.get("labels_saved"):
            st.caption("Difference: the paired AUC difference on the same test images, with its 95% interval. "
                       "Labels to match: how many training labels the baseline needs for the same AUC, read off its "
                       "curve between the measured points, with a 95% bootstrap interval.")
    saved_of = {r["arm"]: r for r in summary.get("labels_saved", [])}
    csv = pd.DataFrame([{"initialisation": csv_safe(e["arm"]), "auc": e["auc"], "ci_low": e["ci_low"],
                         "ci_high": e["ci_high"],
                         "n_test": e["n"], **{f"auc_at_{f}": e["efficiency"][str(f)] for f in fractions},
                         **{f"p_vs_{csv_safe(o)}": t["p_value"] for o, t in (e.get("vs") or {}).items()},
                         **_saved_columns(saved_of.get(e["arm"]))} for e in table])
    st.download_button("Download results (CSV)", csv.to_csv(index=False), f"comparison-{comparison_id}.csv",
                       "text/csv", key=f"csv-{comparison_id}")
    if summary["complete"]:
        st.caption(" · ".join(f"{a['label']}: {STATUS_ICON.get(a['status'], '')} {a['status']}"
                              for a in summary["arms"]))


def _saved_rows(reading: dict) -> list[dict]:
    """One row per label fraction: the labels used, the AUC, the paired difference, the labels the baseline needs."""
    rows = []
    for point in reading["points"]:
        test = reading["tests"][str(point["fraction"])]
        needs, low, high = (point[k] for k in ("baseline_labels", "low", "high"))

        def count(n):
            return f"more than all {reading['all_labels']:.0f}" if n is None else f"{n:.0f}"

        rows.append({"share of labels": f"{point['fraction']:.0%}", "labels": round(point["labels"]),
                     f"AUC of {reading['arm']}": round(point["auc"], 3),
                     "difference [95% CI]":
                         f"{test['difference']:+.3f} [{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]",
                     "verdict": {"better": "better", "worse": "worse", "unclear": "no difference shown"}[
                         test["outcome"]],
                     f"labels {reading['baseline']} needs": f"{count(needs)} ({count(low)} to {count(high)})"})
    return rows


def _saved_columns(reading: dict | None) -> dict:
    """The labels-saved reading as CSV columns (empty for a baseline)."""
    if reading is None:
        return {}
    out = {"labels_saved_baseline": csv_safe(reading["baseline"])}
    for point in reading["points"]:
        f = point["fraction"]
        out |= {f"labels_at_{f}": point["labels"], f"diff_vs_baseline_at_{f}": reading["tests"][str(f)]["difference"],
                f"baseline_labels_for_same_auc_at_{f}": point["baseline_labels"],
                f"baseline_labels_low_at_{f}": point["low"], f"baseline_labels_high_at_{f}": point["high"]}
    return out


def at_threshold(comp: dict, summary: dict, table: list[dict], classes: list[str], positive: int,
                 comparison_id: int) -> None:
    """Sensitivity and specificity at a threshold, the mistakes it makes, and how well the probabilities are
    calibrated, for the positive class (of three or more: the chosen class against all the others): opens on the
    best initialisation at the threshold the exported model uses."""
    pos = classes[positive]
    binary = len(classes) == 2
    neg = classes[0] if binary else "another class"
    st.subheader("At a threshold" + ("" if binary else f": {plain(pos)} against the other classes"))
    preds = summary["predictions"]
    arms = [e["arm"] for e in table]
    best = max(range(len(table)), key=lambda i: table[i]["auc"])
    arm = st.selectbox("Initialisation (opens on the best AUC)", arms, index=best, key=f"thr-arm-{comparison_id}")
    job_id = next(a["job_id"] for a in comp["arms"] if a["label"] == arm)
    y, probs = np.array(preds[arm]["y"]), np.array(preds[arm]["probs"])
    rule = compare.decision_threshold(ws, job_id) if binary else None
    chosen = round(rule["value"] if rule else youden_threshold(y, probs, positive), 2)
    t = st.slider(f"Call '{plain(pos)}' when its probability is at least", 0.0, 1.0, chosen, 0.01,
                  key=f"thr-{comparison_id}-{arm}" + ("" if binary else f"-{positive}"))
    if rule:
        st.caption(f"Starts at {chosen:.2f}, the threshold the exported model states: {rule['how']}. The figures "
                   f"below are measured on the {len(y)} out-of-fold test predictions, which it was not chosen on.")
    elif not binary:
        st.caption(f"Starts at {chosen:.2f}: the best sensitivity + specificity (Youden index) for {plain(pos)} "
                   f"against the other classes on these {len(y)} test predictions, so the figures at it are a little "
                   f"optimistic. The model itself calls the most probable of its {len(classes)} classes; this asks "
                   f"what one threshold on the probability of {plain(pos)} would do. Choose the class above the ROC.")
    else:
        st.caption(f"Starts at {chosen:.2f}: the best sensitivity + specificity (Youden index) on these {len(y)} "
                   f"test predictions, so the figures at it are a little optimistic. The models had fewer than "
                   f"{compare.MIN_PER_CLASS} validation images of a class to choose one on; an exported model "
                   "states no threshold.")
    m = threshold_metrics(y, probs, t, positive)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Sensitivity", f"{m['sensitivity']:.1%}")
    c2.metric("Specificity", f"{m['specificity']:.1%}")
    c3.metric("PPV", f"{m['ppv']:.1%}" if m["ppv"] == m["ppv"] else "–")
    c4.metric("NPV", f"{m['npv']:.1%}" if m["npv"] == m["npv"] else "–")
    left, right = st.columns(2)
    left.dataframe(pd.DataFrame(m["confusion"], index=[f"true {neg}", f"true {pos}"],
                                columns=[f"called {neg}", f"called {pos}"]))
    cal = go.Figure()
    cal.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "lightgray"},
                    name="perfectly calibrated", hoverinfo="skip")
    colour = colours(arms)
    for name in arms:
        c = calibration(np.array(preds[name]["y"]), np.array(preds[name]["probs"]), positive)
        cal.add_scatter(x=c["predicted"], y=c["observed"], mode="lines+markers", name=name,
                        line={"color": colour[name]}, text=[f"{n} images" for n in c["count"]])
    cal.update_layout(title="Calibration: predicted probability against what happened", height=360,
                      xaxis_title=f"predicted probability of {plot_text(pos)}",
                      yaxis_title=f"observed share of {plot_text(pos)}", legend={"orientation": "h", "y": -0.3},
                      margin={"t": 40})
    right.plotly_chart(cal, key=f"cal-{comparison_id}")

    mistakes = errors_at(y, probs, t, positive)
    ids = preds[arm]["image_ids"]
    dataset_id = compare.comparison_config(comp).labeled_dataset_id
    rows_by_id = {r["id"]: r for r in store.images(dataset_id)}
    model = _model(str(ws.root), job_id)
    st.caption("Heatmaps (red: where the model looked when it made the call) come from the exported model, "
               + ("which was trained on one fold: they are shown for the images of that fold's test part, the "
                  "others are thumbnails only." if model else "which is not on disk: thumbnails only."))
    others = probs.copy()
    others[:, positive] = -1  # what a missed image was called instead: its most probable other class
    for kind, title in (("false_positives", f"Called {pos}, truly {neg}"),
                        ("false_negatives", f"Called {neg}, truly {pos}")):
        found = mistakes[kind]
        called = {ids[i]: positive if kind == "false_positives" else int(others[i].argmax()) for i in found}
        with st.expander(f"{plain(title)}: {len(found)} image(s)"):
            shown = [rows_by_id[ids[i]] for i in found[:24] if ids[i] in rows_by_id]
            if not shown:
                st.caption("None at this threshold.")
                continue
            p_of = {ids[i]: probs[i, positive] for i in found}
            thumbs = list(image_cache.iter_thumbnails(ws, dataset_id, shown))
            explained = [r["id"] for r, _ in thumbs if model and r["id"] in model.test_image_ids]
            heat = dict(zip(explained, _heatmaps(str(ws.root), job_id, dataset_id, tuple(explained),
                                                 tuple(called[i] for i in explained)) if explained else []))
            st.image([heat.get(r["id"], t) for r, t in thumbs], width=110, caption=[
                f"{plain(tail(r['orig_name'], 20))} · p {p_of[r['id']]:.2f}" + (" · heatmap" if r["id"] in heat else "")
                for r, _ in thumbs])
            if len(found) > 24:
                st.caption(f"The 24 most confident of {len(found)} mistakes.")


@st.cache_resource(max_entries=4, show_spinner=False)
def _model(root: str, job_id: int):
    """The arm's exported model (the workspace folder is part of the key), or None when it is not on disk;
    for heatmaps only, so without the reference of its training images that Predict measures."""
    try:
        return predict.load(ws, f"job:{job_id}", familiar=False)
    except PirlError:
        return None


@st.cache_data(max_entries=32, show_spinner="Computing heatmaps ...")
def _heatmaps(root: str, job_id: int, dataset_id: int, image_ids: tuple, called: tuple) -> list:
    """Where the model looked for the class it called, image by image (`called`: a class index per image)."""
    rows_by_id = {r["id"]: r for r in store.images(dataset_id)}
    thumbs = [t for _, t in image_cache.iter_thumbnails(ws, dataset_id, [rows_by_id[i] for i in image_ids])]
    return predict.explain(ws, job_id, _model(root, job_id), np.stack(thumbs), list(image_ids), list(called))


show(open_id)
