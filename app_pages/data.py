import io

import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages._pacs_tab import pacs_tab
from app_pages._shared import can_edit, editors_only, guarded, plain, plot_text, when, workspace
from pirl_core.data import datasets as datasets_service
from pirl_core.data import image_cache, ingest, labels, patients, sources, tasks
from pirl_core.fmt import tail

ws = workspace()
store = ws.store
PAGE_SIZE = 24

st.title("Data")
st.caption("Bring in unlabeled images for pretraining, and a small labeled set for finetuning and comparison.")

LABEL_CHOICES = ["No labels (unlabeled pool)", "Class sub-folders", "CSV: filename,label[,group]"]


def run_ingest(files, name, label_choice, csv_file, pre_skipped=None):
    bar = st.progress(0.0, text="Checking and importing ...")

    def progress(i, n, current):
        bar.progress(i / max(n, 1), text=f"{i}/{n} {current}")

    csv_bytes = csv_file.getvalue() if (label_choice == LABEL_CHOICES[2] and csv_file) else None
    if label_choice == LABEL_CHOICES[2] and csv_bytes is None:
        st.error("Choose the labels CSV file, or pick another labels option.")
        return
    report = ingest.ingest(ws, files, name, folder_labels=label_choice == LABEL_CHOICES[1],
                           labels_csv=csv_bytes, pre_skipped=pre_skipped, on_progress=progress)
    bar.empty()
    show_report(report)


def show_report(report):
    if report.unchanged:
        st.info(f"**{plain(report.dataset)}** already holds exactly these images: nothing changed.")
    else:
        st.success(f"Imported **{report.imported}** images into **{plain(report.dataset)}**.")
    c1, c2, c3 = st.columns(3)
    c1.metric("Imported", report.imported)
    c2.metric("Duplicates (imported once)", len(report.duplicates))
    c3.metric("Skipped", len(report.skipped))
    for w in report.warnings:
        st.warning(plain(w))
    if report.skipped:
        st.dataframe(pd.DataFrame(report.skipped), hide_index=True)
    if report.duplicates:
        with st.expander(f"{len(report.duplicates)} duplicate file(s)"):
            st.dataframe(pd.DataFrame(report.duplicates), hide_index=True)
    for note in report.notes[:20]:
        st.caption(plain(note))


def ingest_form(key, source_widget, help_text):
    with st.form(f"form-{key}", clear_on_submit=False):
        st.caption(help_text)
        source = source_widget()
        name = st.text_input("Dataset name", key=f"name-{key}", placeholder="e.g. derm-unlabeled-2025")
        label_choice = st.radio("Labels", LABEL_CHOICES, key=f"labels-{key}", horizontal=True)
        csv_file = st.file_uploader("Labels CSV", type=["csv"], key=f"csv-{key}")
        submitted = st.form_submit_button("Import", type="primary")
    return submitted, source, name, label_choice, csv_file


st.header("Add images")
if editors_only("Importing images"):
    tab_files, tab_zip, tab_folder, tab_pacs = st.tabs(["Upload files or a folder", "Upload a zip",
                                                        "Folder on this machine", "From a PACS"])
    with tab_files:
        folder_upload = st.radio("Upload", ["files", "a folder"], horizontal=True, key="upload-what") == "a folder"
        submitted, uploads, name, label_choice, csv_file = ingest_form(
            "folder-upload" if folder_upload else "files",
            lambda: st.file_uploader("A folder of images (its class sub-folders can be the labels)" if folder_upload
                                     else "Images (PNG, JPEG, TIFF, BMP, DICOM)", key=f"uploads-{folder_upload}",
                                     accept_multiple_files="directory" if folder_upload else True),
            "A whole folder, sub-folders included: choose 'Class sub-folders' below to use them as labels."
            if folder_upload else "Select many files at once, or switch to a folder.")
        if submitted:
            with guarded("Import"):
                if not uploads:
                    st.error("Choose at least one image file first.")
                else:
                    run_ingest(sources.upload_source([(u.name, u.getvalue()) for u in uploads]), name or "uploaded",
                               label_choice, csv_file)
    with tab_zip:
        submitted, zip_upload, name, label_choice, csv_file = ingest_form(
            "zip", lambda: st.file_uploader("A .zip of a folder", type=["zip"], key="zip"),
            "Class sub-folders inside the zip can serve as labels.")
        if submitted:
            with guarded("Import"):
                if zip_upload is None:
                    st.error("Choose a .zip file first.")
                else:
                    files, refused = sources.zip_source(io.BytesIO(zip_upload.getvalue()))
                    run_ingest(files, name or zip_upload.name.removesuffix(".zip"), label_choice, csv_file, refused)
    with tab_folder:
        roots = sources.allowed_roots()
        if not roots:
            st.info("Importing a folder on the server is off. To turn it on, set `PIRL_DATA_ROOTS` to the folders "
                    "it may read (separated by `:`) and restart the app. Until then, upload files or a zip, or "
                    "use `pirl ingest FOLDER` on the server.", icon=":material/folder_off:")
        else:
            submitted, folder, name, label_choice, csv_file = ingest_form(
                "folder", lambda: st.text_input("Folder path on the machine running the app", key="folder"),
                "For sets too large to upload. Allowed folders: " + ", ".join(f"`{r}`" for r in roots)
                + " (`PIRL_DATA_ROOTS`).")
            if submitted:
                with guarded("Import"):
                    if not folder:
                        st.error("Type a folder path first.")
                    else:
                        files = sources.folder_source(folder)
                        run_ingest(files, name or folder.rstrip("/").split("/")[-1], label_choice, csv_file)

    with tab_pacs:
        pacs_tab(ws)

def vs_rest_form(dataset: str, classes: list[str], positive: str, dataset_id: int) -> None:
    """One class against all the others, as a labeled set of its own (data/tasks.py)."""
    with st.form(f"vs-rest-{dataset_id}", enter_to_submit=False):
        st.markdown("**A yes-or-no question** from these classes: one class against all the others (for example "
                    "malignant against benign and normal together), as a labeled set of its own. The same images, "
                    "split afresh; this set stays as it is.")
        target = st.selectbox("Class", classes, index=classes.index(positive), key=f"vs-rest-class-{dataset_id}")
        if st.form_submit_button("Make the two-class set"):
            with guarded("Making the two-class set"), st.spinner("Splitting the images ..."):
                report = tasks.one_vs_rest(ws, dataset, target)
                st.session_state["dataset-renamed"] = report.dataset
                made = ", ".join(f"{label} ({n} images)" for label, n in report.labels.items())
                st.session_state["dataset-flash"] = (f"Made {report.dataset}: {made}, {target} the positive class. "
                                                     "Compare, Label, Predict and Export can use it now.")
                st.rerun()


st.header("Datasets")
datasets = store.datasets()
if not datasets:
    st.info("No datasets yet: import some images above.")
    st.stop()

st.dataframe(pd.DataFrame([{"name": d["name"], "kind": d["kind"], "images": d["images"], "labeled": d["labeled"],
                            "skipped": len(store.skipped(d["id"])), "added": when(d["created_at"])}
                           for d in datasets]), hide_index=True)
names = [d["name"] for d in datasets]
if "dataset-renamed" in st.session_state:  # set before the picker exists: it shows the new name
    st.session_state["dataset"] = st.session_state.pop("dataset-renamed")
if "dataset-flash" in st.session_state:
    st.success(plain(st.session_state.pop("dataset-flash")))
chosen = st.selectbox("Look at", names, key="dataset")
ds = store.dataset(chosen)
images = store.images(ds["id"])

if can_edit():
    with st.expander("Rename or delete this dataset"):
        left, right = st.columns(2)
        new_name = left.text_input("New name", value=chosen, key=f"rename-{ds['id']}")
        if left.button("Rename", key=f"rename-button-{ds['id']}"):
            with guarded("Renaming"):
                datasets_service.rename(ws, chosen, new_name)
                st.session_state["dataset-renamed"] = new_name.strip()
                st.session_state["dataset-flash"] = f"Renamed {chosen} to {new_name.strip()}."
                st.rerun()
        dep = datasets_service.dependents(ws, chosen)
        right.markdown(f"Deleting **{plain(chosen)}** removes its {ds['n_images']} images and "
                       f"{datasets_service.describe(dep)}. Models you exported stay.")
        sure = right.checkbox(f"Yes, delete {plain(chosen)} and all of that", key=f"delete-sure-{ds['id']}")
        if right.button("Delete", type="primary", disabled=not sure, key=f"delete-button-{ds['id']}"):
            with guarded("Deleting"):
                gone = datasets_service.delete(ws, chosen)
                st.session_state["dataset-flash"] = f"Deleted {chosen}, with {gone}."
                st.rerun()
st.caption(datasets_service.describe_disk(datasets_service.disk_usage(ws, ds["id"]), len(images)))
people = patients.count([im["group_id"] for im in images])
if people.patients:
    st.markdown(f"**{people.patients:,} patients** (from the DICOM headers) hold {people.images_with_patient:,} of "
                f"these {len(images):,} images. Every split keeps each patient on one side, so no patient's images "
                "are both trained on and tested.")
    if people.warning:
        st.warning(people.warning, icon=":material/person_alert:")

counts = store.class_counts(ds["id"])
if counts:
    left, right = st.columns(2)
    split_rows = pd.DataFrame([{"label": im["label"], "split": im["split"]} for im in images if im["label"]])
    fig = px.histogram(split_rows.assign(label=split_rows["label"].map(plot_text)), x="label", color="split",
                       barmode="group", title="Class balance by split",
                       category_orders={"split": ["train", "val", "test"]})
    left.plotly_chart(fig, width="stretch")
    right.dataframe(split_rows.value_counts().unstack(fill_value=0), width="stretch")
    positive = labels.positive_class(list(counts), ds["info"].get("positive"))
    if can_edit():
        options = sorted(counts)
        chosen_positive = st.selectbox(
            "Positive class: the finding the figures are about", options, index=options.index(positive),
            key=f"positive-{ds['id']}", help="Compare's sensitivity, PPV, ROC and threshold, Predict's decision and "
                                             "the model card are stated for this class; comparisons started from "
                                             "now on use it.")
        if chosen_positive != positive:
            with guarded("Setting the positive class"):
                datasets_service.set_positive(ws, chosen, chosen_positive)
                st.rerun()
    else:
        st.caption(f"Positive class: {plain(positive)}.")
    if can_edit() and len(counts) > 2:
        vs_rest_form(chosen, sorted(counts), positive, ds["id"])
    conflicts = ds["info"].get("label_conflicts", [])
    if conflicts:
        st.warning(f"{len(conflicts)} set(s) of near-identical images carry different labels. One of each set is "
                   "probably mislabeled; the copies always share a split, but check the labels.",
                   icon=":material/report:")
        st.dataframe(pd.DataFrame([{"set": k + 1, "file": name, "label": label}
                                   for k, c in enumerate(conflicts) for name, label in c["images"]]),
                     hide_index=True)
elif can_edit():
    with st.expander("Attach labels (CSV: filename,label[,group])"):
        with st.form("attach"):
            csv_file = st.file_uploader("Labels CSV", type=["csv"], key="attach-csv")
            if st.form_submit_button("Attach labels and split") and csv_file:
                with guarded("Attaching labels"):
                    report = ingest.attach_labels(ws, chosen, csv_file.getvalue())
                    st.session_state["dataset-flash"] = " ".join([
                        f"Labels attached to {chosen}: " + ", ".join(
                            f"{label} ({n} images)" for label, n in report.labels.items()) + ".", *report.warnings])
                    st.rerun()  # the page shows the labeled set at once: classes, splits, thumbnails

st.subheader("Images")
query = st.text_input("Filter by file name", key="thumb-filter")
shown = [im for im in images if query.lower() in im["orig_name"].lower()] if query else images
pages = max(1, -(-len(shown) // PAGE_SIZE))
page_no = st.number_input(f"Page (of {pages})", 1, pages, 1, key="thumb-page") if pages > 1 else 1
window = shown[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]
if window:
    thumbs = list(image_cache.iter_thumbnails(ws, ds["id"], window))
    st.image([t for _, t in thumbs], width=112,
             caption=[plain(tail(r["orig_name"], 22)) + (f" · {plain(r['label'])}" if r["label"] else "")
                      for r, _ in thumbs])
else:
    st.caption("No image matches.")

skipped = store.skipped(ds["id"])
if skipped:
    with st.expander(f"{len(skipped)} skipped file(s)"):
        st.dataframe(pd.DataFrame(skipped), hide_index=True)
