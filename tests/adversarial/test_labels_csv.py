"""Labels from a CSV: full relative paths, ambiguous bare names and conflicting rows are errors that name
the files, found before any image is decoded; spreadsheet encodings are read."""

import pytest

from pirl_core.data import ingest, labels, sources
from pirl_core.errors import PirlError


def _sources(names):
    decoded = []

    def read(name):
        decoded.append(name)
        raise AssertionError("no image may be read before the CSV is checked")

    return [sources.SourceFile(n, lambda n=n: read(n)) for n in names], decoded


def test_full_relative_paths_tell_apart_files_with_one_name():
    found, _, unknown = labels.match_labels(
        ["site1/1.png", "site2/1.png", "site2/2.png"],
        labels.read_labels_csv("filename,label\nsite1/1.png,benign\n./site2/1.png,malignant\nsite2\\2.png,benign\n"))
    assert found == ["benign", "malignant", "benign"] and unknown == []


def test_a_bare_name_that_matches_several_files_is_an_error_naming_them(ws):
    files, decoded = _sources(["site1/1.png", "site2/1.png"])
    with pytest.raises(PirlError, match=r"match several images: 1.png \(site1/1.png, site2/1.png\)"):
        ingest.ingest(ws, files, "lab", labels_csv=b"filename,label\n1.png,benign\n")
    assert decoded == []  # found before any image was processed


def test_conflicting_rows_for_one_file_are_an_error_not_last_wins():
    with pytest.raises(PirlError, match=r"two different labels or groups: a.png \(benign / malignant\)"):
        labels.read_labels_csv("filename,label\na.png,benign\nb.png,benign\na.png,malignant\n")
    assert labels.read_labels_csv("filename,label\na.png,benign\na.png,benign\n") == {"a.png": ("benign", None)}


def test_a_spreadsheet_csv_in_windows_1252_is_read():
    table = labels.read_labels_csv("filename,label\nl\u00e9sion.png,b\u00e9nin\n".encode("cp1252"))
    assert table == {"l\u00e9sion.png": ("b\u00e9nin", None)}


def test_a_class_of_one_image_is_found_before_any_image_is_decoded(ws):
    files, decoded = _sources(["a/1.png", "a/2.png", "a/3.png", "b/1.png"])
    with pytest.raises(PirlError, match="b has 1"):
        ingest.ingest(ws, files, "lab", folder_labels=True)
    csv = b"filename,label\na/1.png,x\na/2.png,x\na/3.png,x\nb/1.png,y\n"
    with pytest.raises(PirlError, match="y has 1"):
        ingest.ingest(ws, files, "lab2", labels_csv=csv)
    assert decoded == []


def test_a_csv_saved_as_utf_16_with_or_without_its_bom_is_read():
    text = "filename,label\nl\u00e9sion.png,b\u00e9nin\n"
    for data in (text.encode("utf-16"), text.encode("utf-16-le"), text.encode("utf-16-be"),
                 b"\xef\xbb\xbf" + text.encode()):
        assert labels.read_labels_csv(data) == {"l\u00e9sion.png": ("b\u00e9nin", None)}


def test_a_csv_that_is_not_text_says_to_save_it_as_utf_8():
    with pytest.raises(PirlError, match='save it as "CSV UTF-8"') as err:
        labels.read_labels_csv(b"filename,label\n\x00\x81\x8d\x8f\x90\x9d" * 3)
    assert "\x00" not in str(err.value)


def test_a_labels_csv_that_does_not_exist_is_one_sentence_in_the_cli(tmp_path, demo_dir, capsys):
    from pirl_core.cli import main

    code = main(["-w", str(tmp_path / "ws"), "ingest", str(demo_dir / "labeled"), "--labels", str(tmp_path / "no.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err
