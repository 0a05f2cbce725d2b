"""The layering the README promises: pages -> services -> engine, no import cycles, one error family."""

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pirl_core
from pirl_core import errors
from tests.conftest import ROOT

MODULES = sorted(m.name for m in pkgutil.walk_packages(pirl_core.__path__, "pirl_core.")
                 if not m.name.endswith("__main__"))


def test_every_module_imports_on_its_own_in_a_fresh_process():
    """A cycle hidden behind import order shows up as an ImportError when a module is imported first."""
    code = ("import importlib, sys\nbad = []\n"
            f"for name in {MODULES!r}:\n"
            "    for loaded in [m for m in sys.modules if m.startswith('pirl_core')]:\n"
            "        del sys.modules[loaded]\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception as exc:\n        bad.append(f'{name}: {exc!r}')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pirl_core.engine.pretrain" in MODULES and "pirl_core.cli.train" in MODULES


# Who may import whom, lowest first: a module imports only from its own rung or a lower one. `jobs.kinds` and
# `jobs.worker` are the worker's entry point: they import every job kind, so they sit above the kinds.
RUNGS = [("errors", "fmt", "__version__"), ("workspace.atomic",), ("engine",), ("workspace",), ("access",),
         ("search", "jobs.queue", "jobs.records"), ("data",), ("training", "evaluation"), ("models", "labeling"),
         ("demo",), ("jobs.kinds", "jobs.worker"), ("cli",)]


def _rung(module: str) -> int:
    name = module.removeprefix("pirl_core.")
    best = [(len(prefix), i) for i, rung in enumerate(RUNGS) for prefix in rung
            if name == prefix or name.startswith(prefix + ".")]
    assert best, f"{module} is on no rung of RUNGS"
    return max(best)[1]


def _imports(path, package: str) -> list[tuple[str, list[str]]]:
    """(module, names) for every `import` and `from ... import` in a file, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((module, [alias.name for alias in node.names]))
    return out


def _targets(module: str, names: list[str]) -> list[str]:
    """The pirl_core modules an import statement reaches: `from pirl_core import engine` reaches the engine."""
    if module != "pirl_core" and not module.startswith("pirl_core."):
        return []
    package = (ROOT / module.replace(".", "/")).is_dir()
    return [f"{module}.{n}" if package and importlib.util.find_spec(f"{module}.{n}") else module
            for n in names] or [module]


def test_no_service_imports_a_higher_rung_and_the_engine_only_what_is_below_it():
    for path in (ROOT / "pirl_core").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        if module.endswith("__main__") or module == "pirl_core":
            continue
        for target in (t for m, names in _imports(path, package) for t in _targets(m, names)):
            if target != "pirl_core":
                assert _rung(target) <= _rung(module), f"{module} imports {target}, a higher rung"


def test_no_module_imports_streamlit_and_no_page_reaches_the_engine():
    """Not by `pirl_core.engine...`, not by `from pirl_core import engine`, and not through a service that
    re-exports an engine name."""
    for path in (ROOT / "pirl_core").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.M), path
    for path in [ROOT / "app.py", ROOT / "studio.py", *(ROOT / "app_pages").glob("*.py")]:
        for module, names in _imports(path, "app_pages"):
            for target in _targets(module, names):
                assert not target.startswith("pirl_core.engine"), (path.name, target)
            if module.startswith("pirl_core.") and names:
                for name in names:
                    parent = importlib.import_module(module)
                    obj = getattr(parent, name, None) or importlib.import_module(f"{module}.{name}")
                    origin = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "") or ""
                    assert not origin.startswith("pirl_core.engine"), f"{path.name}: {module}.{name} is the engine's"


def test_the_server_loads_every_module_a_page_imports_before_its_first_visitor():
    """A page's first visit after a start must not wait for torch and the services to load (10-18 s measured):
    importing app.py, as `streamlit run` does before it serves, loads every pirl_core, pandas and plotly module
    that studio.py and the pages import, at the top or inside a function."""
    wanted = set()
    for path in [ROOT / "studio.py", *(ROOT / "app_pages").glob("*.py")]:
        for module, names in _imports(path, "app_pages"):
            wanted.update(_targets(module, names))
            if module.split(".")[0] in ("pandas", "plotly"):
                wanted.add(module)
    code = f"import sys, app\nprint('\\n'.join(sorted(set({sorted(wanted)!r}) - set(sys.modules))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "pirl_core.evaluation.compare" in wanted
    assert result.stdout.split() == [], "loaded only at a page's first visit"


def test_the_collection_after_each_script_run_walks_only_what_the_visits_made():
    """Streamlit runs a full garbage collection after every script run and fragment redraw, with the GIL held:
    over the ~540,000 objects torch and the services make at import, 0.8-1.2 s under load, during which every
    session waits. The server freezes what it imported, so a collection walks only what came after."""
    code = "import gc, app\nprint(len(gc.get_objects()), gc.get_freeze_count())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    walked, frozen = map(int, result.stdout.split()[-2:])
    assert frozen > 200_000 and walked < frozen / 10


def test_layering_checks_catch_what_they_are_for(tmp_path):
    """The checks above on planted files: an engine import by package name and a re-exported engine class."""
    planted = tmp_path / "page.py"
    planted.write_text("from pirl_core import engine\nfrom pirl_core.evaluation.compare import FinetuneConfig\n")
    reached = [t for m, names in _imports(planted, "app_pages") for t in _targets(m, names)]
    assert "pirl_core.engine" in reached
    assert importlib.import_module("pirl_core.evaluation.compare").FinetuneConfig.__module__.startswith(
        "pirl_core.engine")
    assert _rung("pirl_core.engine.pretrain") < _rung("pirl_core.data.ingest") < _rung("pirl_core.cli.data")


def test_the_readme_layout_names_every_module_of_the_package():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for name in MODULES:
        short = name.removeprefix("pirl_core.").replace(".", "/")
        if short not in ("cli/_output",):
            names = (f"`{short.rsplit('/', 1)[-1]}`", f"`{short}`", f"`pirl_core/{short}/`")
            assert any(n in layout for n in names), f"{short} missing from Layout"


def test_user_facing_errors_are_one_family():
    """Every exception class in pirl_core is defined in errors.py and is a PirlError."""
    for name in MODULES:
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name:
                assert name == "pirl_core.errors", f"{cls.__name__} is defined in {name}, not errors.py"
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, BaseException) and cls.__module__ == "pirl_core.errors":
            assert issubclass(cls, errors.PirlError), cls


def test_a_workspace_from_a_newer_version_is_one_sentence_in_the_cli(ws, capsys):
    from pirl_core.cli import main
    from pirl_core.workspace.store import SCHEMA_VERSION

    ws.store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert main(["-w", str(ws.root), "datasets"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The workspace database") and "newer" in err and "Traceback" not in err


def test_a_workspace_from_a_newer_version_is_a_message_on_every_page(ws):
    from streamlit.testing.v1 import AppTest

    from pirl_core.workspace.store import SCHEMA_VERSION

    ws.store.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for page in sorted((ROOT / "app_pages").glob("[!_]*.py")):
        at = AppTest.from_file(str(page), default_timeout=60).run()
        assert not at.exception, (page.name, at.exception)
        assert any("newer" in e.value for e in at.error), page.name


def test_finetune_settings_with_an_unknown_key_are_refused():
    from pirl_core.engine.finetune import FinetuneConfig

    assert FinetuneConfig.from_dict({"mode": "finetune"}).mode == "finetune"
    with pytest.raises(errors.PirlError, match="learning_rte"):
        FinetuneConfig.from_dict({"learning_rte": 0.1})


def test_cli_choices_come_from_the_registries():
    from pirl_core.cli import build_parser
    from pirl_core.engine.backbones import REGISTRY
    from pirl_core.engine.config import PRETEXTS
    from pirl_core.evaluation.compare import INITS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    by_dest = {a.dest: a.choices for a in sub["pretrain"]._actions}
    assert list(by_dest["backbone"]) == list(REGISTRY) and list(by_dest["pretext"]) == list(PRETEXTS)
    assert list({a.dest: a.choices for a in sub["finetune"]._actions}["init"]) == list(INITS)



def _child_ok(path: str) -> None:
    Path(path).write_text("ok")


def test_a_page_run_by_apptest_is_left_as_main(ws):
    from streamlit.testing.v1 import AppTest

    assert not AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run().exception
    assert getattr(sys.modules["__main__"], "__file__", "").endswith("home.py")  # what the next test meets


def test_a_spawned_process_after_a_page_test_starts(tmp_path, monkeypatch):
    """The test above leaves the page as __main__; the suite's fixture puts the interpreter's back. (A child
    that re-ran the page would meet this unusable workspace and die.)"""
    import multiprocessing

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PIRL_HOME", str(tmp_path / "a-file"))
    proc = multiprocessing.get_context("spawn").Process(target=_child_ok, args=(str(tmp_path / "out"),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0 and (tmp_path / "out").read_text() == "ok"


def test_the_figures_the_app_quotes_are_the_readme_table():
    """The Pretrain page's sentences and the README's table of defaults come from training/measured.py."""
    from pirl_core.training import measured

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Defaults, and what they are worth"):readme.index("## Command line")]
    assert measured.COMMAND in table
    d, r = measured.CPU_DEFAULT, measured.RANDOM_START
    for task in ("binary", "3-class"):
        assert f"{d['auc'][task]:.3f}" in table and f"{d['imagenet_auc'][task]:.3f}" in table
        assert f"+{d['gain_over_imagenet'][task]:.3f}" in table and f"+{r['product_gain'][task]:.3f}" in table
    assert f"{d['minutes']} min" in table
    t = measured.SECOND_TASK  # the second task's figures are the README's too
    assert f"{t['auc']:.3f}" in table and f"{t['imagenet_auc']:.3f}" in table
    assert f"+{t['gain_over_imagenet']:.3f}" in table and f"+{d['half_epochs_gain']:.3f}" in table
    for run in (*measured.OTHER_SEEDS.values(), *measured.OTHER_SEEDS_SECOND_TASK.values()):  # what one run varies
        assert f"{run['auc']:.3f}" in table and f"{run['auc_10']:.3f}" in table
        assert f"+{run['gain_over_imagenet']:.3f}" in table and f"+{run['gain_over_imagenet']:.3f}" in \
            measured.cpu_default_sentence()
    page = (ROOT / "app_pages/pretrain.py").read_text()
    assert "measured.cpu_default_sentence()" in page and "measured.random_start_sentence()" in page
    assert f"about {round(d['minutes'])} minutes" in measured.cpu_default_sentence()
    flat = " ".join(readme.split())  # the README's prose, wrapped anywhere
    for scan in (measured.SCAN_AUGMENT, measured.SCAN_AUGMENT_SECOND_TASK):  # the augmentation's, on both tasks
        assert f"{scan['auc']:.3f} vs {scan['photo_auc']:.3f}" in flat
        assert f"{scan['auc']:.3f} against {scan['photo_auc']:.3f}" in measured.augment_sentence()
    assert "measured.augment_sentence()" in page
    from pirl_core.engine.config import PRETEXTS, PretrainConfig

    assert list(measured.PRETEXTS) == list(PRETEXTS)  # the README lists the choices in the order the page does
    for table, sentence in ((measured.IMAGE_SIZES, measured.image_size_sentence()),
                            (measured.IMAGE_SIZES_SECOND_TASK, measured.image_size_sentence()),
                            (measured.PRETEXTS, measured.pretext_sentence()),
                            (measured.PRETEXTS_SECOND_TASK, measured.pretext_sentence()),
                            (measured.EPOCHS, measured.epochs_sentence()),
                            (measured.EPOCHS_SECOND_TASK, measured.epochs_sentence())):
        for key, form in (("auc", "{:.3f}"), ("auc_10", "{:.3f}"), ("minutes", "{}")):
            assert " / ".join(form.format(f[key]) for f in table.values()) in flat
            assert all(form.format(f[key]) in sentence for f in table.values())

    starts = measured.side_by_side_sentence()  # what ImageNet+PIRL's probe reads: the Compare page's help
    for table in (measured.SIDE_BY_SIDE, measured.SIDE_BY_SIDE_SECOND_TASK):
        for key in ("auc", "auc_10"):
            figures = " and ".join(f"{f['alone'][key]:.3f} -> {f['side_by_side'][key]:.3f}" for f in table.values())
            assert figures in flat and figures in starts
    assert "help=measured.side_by_side_sentence()" in (ROOT / "app_pages/compare.py").read_text()
    for table in (measured.TOGETHER, measured.TOGETHER_SECOND_TASK):  # several runs read together: help and README
        for key in ("auc", "auc_10"):
            figures = " and ".join(f"{f[key]:.3f}" for f in table["each"]) + f" -> {table['together'][key]:.3f}"
            assert figures in flat and figures in measured.together_sentence() and table["runs"] in flat
    assert "help=measured.together_sentence()" in (ROOT / "app_pages/compare.py").read_text()

    lr_help = measured.backbone_lr_scale_sentence()  # which layers adapt: the command line's help, on both tasks
    for table in (measured.BACKBONE_LR_SCALES, measured.BACKBONE_LR_SCALES_SECOND_TASK):
        for key in ("auc", "auc_10"):
            figures = " / ".join(f"{f[key]:.3f}" for f in table.values())
            assert figures in flat and figures in lr_help
    assert "help=measured.backbone_lr_scale_sentence()" in (ROOT / "pirl_core/cli/train.py").read_text()

    cpu = PretrainConfig.defaults_for("cpu")  # the sentences name the engine's defaults, measured above
    assert d["epochs"] == cpu.epochs
    assert f"{cpu.image_size} px is the default" in measured.image_size_sentence()
    assert measured.IMAGE_SIZES[cpu.image_size]["auc"] == measured.PRETEXTS[cpu.pretext]["auc"] == d["auc"]["binary"]
    assert "measured.image_size_sentence()" in page and "measured.pretext_sentence()" in page
    assert page.count("measured.epochs_sentence()") == 2  # the epochs and the minutes: what a longer run buys
    assert measured.EPOCHS[cpu.epochs] == measured.IMAGE_SIZES[cpu.image_size]
    assert f"{cpu.epochs} is the default" in measured.epochs_sentence()


def test_the_engine_reads_in_one_sitting():
    """No engine module over 250 lines and no function over 60, so the loop reads like the paper's algorithm."""
    for path in sorted((ROOT / "pirl_core/engine").glob("*.py")):
        text = path.read_text()
        assert text.count("\n") <= 250, f"{path.name}: {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}: {node.name} is {length} lines"


def test_the_command_line_starts_without_importing_torch(tmp_path):
    """`pirl datasets`, `pirl jobs`, `pirl ingest --help`: parsing and a workspace query need no torch (9 s of
    imports before every command)."""
    code = ("import sys\nfrom pirl_core.cli import main\n"
            f"assert main(['-w', {str(tmp_path / 'ws')!r}, 'datasets']) == 0\n"
            f"assert main(['-w', {str(tmp_path / 'ws')!r}, 'jobs']) == 0\n"
            "heavy = [m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
