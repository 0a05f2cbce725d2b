
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages._shared import (
    STATUS_ICON,
    can_edit,
    editors_only,
    guarded,
    loss_figure,
    plain,
    show_job_failure,
    when,
    workspace,
)
from pirl_core.fmt import duration
from pirl_core.jobs import queue
from pirl_core.training import measured, planning, pretraining

IMAGENET = "ImageNet weights (domain-adaptive PIRL)"
STARTS = {
    IMAGENET: measured.cpu_default_sentence() + " Needs ImageNet weights for the backbone (efficientnet_lite0 has "
                                                "them built in).",
    "random weights": measured.random_start_sentence() + " Train for a time (below) and give it an hour or a "
                                                         "night for more.",
}
PRETEXT_HELP = {
    "jigsaw": "the paper's choice: invariance to shuffling 3x3 patches; learns local structure and texture",
    "rotation": "invariance to 90/180/270 degree rotation; made for images whose orientation means nothing "
                "(dermoscopy, histology, cells); as good as jigsaw on breast ultrasound, a little behind it on chest "
                "X-rays",
    "jigsaw+rotation": "both: combining pretext transforms helped in the PIRL paper; as good as jigsaw on breast "
                       "ultrasound, behind it on chest X-rays; up to half as long again to train",
}

AUGMENT_HELP = {"photo": "photo: the paper's colour jitter and grayscale",
                "scan": "scan: brightness, contrast, gamma and blur (grayscale scans)"}

ws = workspace()
store = ws.store
queue.reap(ws)

st.title("Pretrain")
st.caption("PIRL learns from unlabeled images: each image and its shuffled jigsaw patches are pulled together "
           "and pushed away from the other images in a memory bank.")

datasets = store.datasets()
if not datasets:
    st.info("No datasets yet: import images on the Data page first.")
    st.stop()

if editors_only("Starting a pretraining run"):
    defaults = pretraining.default_config()
    with st.form("start", enter_to_submit=False):  # a run starts from its button, not from Enter
        by_name = {d["name"]: d for d in datasets}
        # a form reruns nothing until submit: each choice says what a run at the defaults takes before it starts
        took = {n: duration(planning.estimate_seconds(store, defaults, d["images"])[0]) for n, d in by_name.items()}
        name = st.selectbox("Images to pretrain on", list(by_name), key="pretrain-dataset",
                            format_func=lambda n: f"{n} ({by_name[n]['images']} images; about {took[n]} at the "
                                                  "defaults)")
        st.caption(f"This machine: {planning.machine()}. Defaults: {defaults.backbone} at {defaults.image_size} px, "
                   f"{defaults.epochs} epochs, batch {defaults.batch_size}"
                   + (" (small and fast, chosen for a CPU; the paper's resnet50 at 224 px needs a GPU)."
                      if defaults.image_size < 224 else " (close to the paper)."))
        start_from = st.radio("Start from", list(STARTS), index=0 if defaults.pretrained_imagenet else 1,
                              key="pt-start", horizontal=True)
        st.caption("  \n".join(f"**{k}**: {v}" for k, v in STARTS.items()))  # a form shows a choice only on submit
        c1, c2 = st.columns(2)
        length = c1.radio("Train for", ["epochs", "minutes"], horizontal=True, key="pt-length",
                          format_func={"epochs": "a number of epochs", "minutes": "a time (minutes)"}.get)
        minutes = c2.number_input("Minutes (when training for a time)", 1, 24 * 60, 30, key="pt-minutes",
                                  help="The epochs follow from the speed measured in the first steps of the run. "
                                       "Overnight: 600 minutes. " + measured.epochs_sentence())
        pretext = st.radio("Pretext: what the representation learns to ignore", pretraining.PRETEXTS, horizontal=True,
                           key="pt-pretext", help=measured.pretext_sentence())
        st.caption("  \n".join(f"**{k}**: {v}." for k, v in PRETEXT_HELP.items()))
        with st.expander("Advanced settings"):
            c1, c2, c3 = st.columns(3)
            backbone = c1.selectbox("Backbone", pretraining.BACKBONES, key="pt-backbone",
                                    index=pretraining.BACKBONES.index(defaults.backbone))
            image_size = c1.number_input("Image size (px)", 32, 512, defaults.image_size, step=16, key="pt-size",
                                         help=measured.image_size_sentence())
            epochs = c2.number_input("Epochs", 1, 2000, defaults.epochs, key="pt-epochs",
                                     help=measured.epochs_sentence())
            batch_size = c2.number_input("Batch size", 2, 4096, defaults.batch_size, key="pt-batch")
            lr = c2.number_input("Learning rate (0 = 0.24 per 256 images)", 0.0, 10.0, 0.0, format="%.4f", key="pt-lr")
            negatives = c3.number_input("Negatives per image (0 = all others, up to 16384)", 0, 65536, 0,
                                        key="pt-negatives")
            temperature = c3.number_input("Temperature", 0.01, 1.0, defaults.temperature, format="%.3f",
                                          key="pt-temperature")
            lam = c3.slider("λ: weight of the pretext term(s)", 0.0, 1.0, defaults.pretext_weight, key="pt-lambda")
            seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="pt-seed")
            augment = c1.selectbox("Augmentation", pretraining.AUGMENTS, key="pt-augment",
                                   format_func=AUGMENT_HELP.get,
                                   help=measured.augment_sentence())
        gpus = pretraining.visible_gpus()
        nproc = 1
        if gpus > 1:
            nproc = st.number_input("GPUs", 1, gpus, gpus, key="pt-gpus",
                                    help="One training process per GPU; together they train like one process with "
                                         "the whole batch (see the README's Scaling section).")
        start = st.form_submit_button("Start pretraining", type="primary")

    if start:
        with guarded("Starting the run"):
            config = pretraining.default_config(
                backbone=backbone, pretrained_imagenet=start_from == IMAGENET, image_size=int(image_size),
                epochs=int(epochs), time_budget_s=60.0 * minutes if length == "minutes" else None,
                batch_size=int(batch_size), lr=lr or None, negatives=int(negatives) or None, temperature=temperature,
                pretext_weight=lam, seed=int(seed), pretext=pretext, augment=augment, nproc=int(nproc))
            job_id = pretraining.start(ws, name, config)
            st.session_state["pretrain-run"] = job_id  # the run just started is the one shown below
            if config.time_budget_s:  # a toast: a banner would outlive the run (the page body is not redrawn)
                st.toast(f"Queued pretraining run #{job_id} on {plain(name)} for "
                         f"{duration(config.time_budget_s)}: its epochs are set from the speed of its first steps.")
            else:
                seconds, source = planning.estimate_seconds(store, config, by_name[name]["images"])
                st.toast(f"Queued pretraining run #{job_id} on {plain(name)}: about {duration(seconds)} ({source}, "
                         "with nothing else using the processor); its ETA below follows from its own first steps.")

runs = pretraining.runs(ws)
if not runs:
    st.info("No pretraining runs yet.")
    st.stop()

names = {d["id"]: d["name"] for d in datasets}
st.header("Runs")


@st.fragment(run_every=3)
def runs_table() -> None:
    """Every run with its live status and progress."""
    rows = []
    for r in pretraining.runs(ws):
        c, out = queue.config_of(r), queue.result_of(r)
        rows.append({"run": r["id"], "status": r["status"], "dataset": names.get(r["dataset_id"], "?"),
                     "pretext": c.pretext, "backbone": c.backbone, "ImageNet start": c.pretrained_imagenet,
                     "size": c.image_size, "epochs": out.epochs or c.epochs,
                     "progress": f"{100 * (r['progress'] or 0):.0f}%",
                     "final loss": f"{out.last['loss']:.3f}" if out.last else "—", "started": when(r["started_at"])})
    st.dataframe(pd.DataFrame(rows), hide_index=True)


runs_table()

live = next((i for i, r in enumerate(runs) if r["status"] in queue.ACTIVE), 0)  # a fresh visit shows the live run
run_id = st.selectbox("Run", [r["id"] for r in runs], index=live, key="pretrain-run",
                      format_func=lambda i: f"#{i}")


@st.fragment(run_every=2)
def live_run(job_id: int) -> None:
    job = store.job(job_id)
    st.subheader(f"Run #{job_id} · {STATUS_ICON.get(job['status'], '')} {job['status']}")
    if job["status"] in queue.ACTIVE:
        st.progress(min(1.0, job["progress"] or 0.0), text=job["message"] or "waiting for the worker")
    elif job["status"] == "failed":
        show_job_failure(job)
    elif job["message"]:
        st.caption(job["message"])
    metrics = store.metrics(job_id, ["loss", "loss_jigsaw", "loss_rotation", "loss_image", "lr"])
    if metrics:
        dataset = store.dataset(job["dataset_id"]) if job["dataset_id"] else None
        chance = pretraining.chance_loss(job, dataset["n_images"]) if dataset else None
        last = next((m["value"] for m in reversed(metrics) if m["name"] == "loss"), None)
        if chance is not None and last is not None:
            st.markdown(pretraining.learning_verdict(last, chance))
        st.plotly_chart(loss_figure(metrics, "PIRL loss", chance), key=f"curve-{job_id}")
    else:
        st.caption("The loss curve appears after the first training step.")
    if not can_edit():
        return
    c1, c2 = st.columns(2)
    if job["status"] in queue.ACTIVE and c1.button("Cancel", key=f"cancel-{job_id}"):
        with guarded("Cancel"):
            queue.cancel(ws, job_id)
            st.toast(f"Cancelling run #{job_id} ...")
    if job["status"] in queue.RESUMABLE and c2.button(
            "Resume from last checkpoint" if job["checkpoint"] else "Start it again", key=f"resume-{job_id}"):
        with guarded("Resume"):
            queue.resume(ws, job_id)
            st.toast(f"Run #{job_id} queued to resume.")


live_run(run_id)

if len(runs) > 1:
    st.header("Compare runs")
    chosen = st.multiselect("Runs", [r["id"] for r in runs], default=[r["id"] for r in runs[:2]], key="compare-runs")
    fig = go.Figure()
    for rid in chosen:
        rows = store.metrics(rid, ["loss"])
        fig.add_scatter(x=[m["epoch"] for m in rows], y=[m["value"] for m in rows], mode="lines", name=f"run #{rid}")
    fig.update_layout(xaxis_title="epoch", yaxis_title="total loss", height=350)
    st.plotly_chart(fig, key="compare-curves")
