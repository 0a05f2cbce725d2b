"""The layering the README promises: pages -> services -> engine, no import cycles, one error family."""

import pkgutil
import re
import subprocess
import sys

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


def test_no_module_imports_streamlit_and_no_page_imports_the_engine():
    for path in (ROOT / "pirl_core").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.M), path
    for path in [ROOT / "app.py", *(ROOT / "pages").glob("*.py")]:
        assert "pirl_core.engine" not in path.read_text(), path


def test_the_readme_layout_names_every_module_of_the_package():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for name in MODULES:
        short = name.removeprefix("pirl_core.").replace(".", "/")
        if short not in ("cli/_output",):
            names = (f"`{short.rsplit('/', 1)[-1]}`", f"`{short}`", f"`pirl_core/{short}/`")
            assert any(n in layout for n in names), f"{short} missing from Layout"


def test_user_facing_errors_are_one_family():
    for cls in (errors.BadImage, errors.SchemaTooNew, errors.Cancelled):
        assert issubclass(cls, errors.PirlError)


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
    for page in sorted((ROOT / "pages").glob("[!_]*.py")):
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

