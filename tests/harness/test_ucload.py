"""harness/ucload.py: the first `import unicorn` after `import harness` loads the same library as a plain
import, leaves neither `inspect` nor `importlib.resources` behind (nor its stand-ins), keeps a process's own
copies of them, honours LIBUNICORN_PATH, and falls back to the ordinary import when a stand-in fails."""
import json
import os
import subprocess
import sys

_REPORT = """
import json, sys
mod = sys.modules.get("importlib.resources")
print(json.dumps({
    "lib": unicorn.unicorn_py3.unicorn.uclib._name,
    "inspect": "inspect" in sys.modules and getattr(sys.modules["inspect"], "getsource", None) is not None,
    "inspect_loaded": "inspect" in sys.modules,
    "resources": None if mod is None else hasattr(mod, "as_file"),
    "loader": type(unicorn.__loader__).__name__ + "/" + type(unicorn.__spec__.loader).__name__,
    "finders": [getattr(f, "__module__", "") for f in sys.meta_path],
    "same": SAME,
}))
"""


def _run(code: str, env: dict | None = None) -> dict:
    p = subprocess.run([sys.executable, "-c", code + _REPORT], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **(env or {})})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def _site_has(module: str) -> bool:
    """Whether this interpreter's site packages load `module` before any import of ours (a .pth can)."""
    p = subprocess.run([sys.executable, "-c", f"import sys; print({module!r} in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    return p.stdout.strip() == "True"


def test_the_same_library_without_the_modules_its_loader_drops():
    plain = _run("import unicorn; SAME = None")
    ours = _run("import harness, unicorn; SAME = None")
    assert ours["lib"] == plain["lib"] and ours["lib"].endswith("libunicorn.so.2")
    assert ours["loader"] == plain["loader"] == "SourceFileLoader/SourceFileLoader"
    assert "harness.ucload" not in ours["finders"]                     # one shot: the finder is gone
    if not _site_has("inspect"):
        assert plain["inspect_loaded"] and not ours["inspect_loaded"]
    if not _site_has("importlib.resources"):
        assert plain["resources"] and ours["resources"] is None
    else:
        assert ours["resources"] is True                               # the real one, not the stand-in


def test_a_later_import_gets_the_real_modules_and_earlier_ones_are_kept():
    later = _run("import harness, unicorn, inspect, importlib.resources as r; SAME = r.files('unicorn') is not None")
    assert later["inspect"] and later["resources"] and later["same"]
    kept = _run("import inspect, harness, unicorn, sys; SAME = sys.modules['inspect'] is inspect")
    assert kept["same"] and kept["inspect"]


def test_libunicorn_path_still_comes_first(tmp_path):
    plain = _run("import unicorn; SAME = None")
    (tmp_path / "libunicorn.so.2").symlink_to(plain["lib"])
    ours = _run("import harness, unicorn; SAME = None", env={"LIBUNICORN_PATH": str(tmp_path)})
    assert ours["lib"] == str(tmp_path / "libunicorn.so.2")


def test_a_stand_in_that_fails_falls_back_to_the_ordinary_import():
    code = ("import harness.ucload as u, types\n"
            "def broken():\n"
            "    s = u._real_stand_ins()\n"
            "    s['inspect'].getfile = lambda obj: 1 / 0\n"
            "    return s\n"
            "u._real_stand_ins, u._stand_ins = u._stand_ins, broken\n"
            "import unicorn, sys\n"
            "SAME = [n for n in sys.modules if n.startswith('unicorn.')] != []\n")
    out = _run(code)
    assert out["lib"].endswith("libunicorn.so.2") and out["inspect"] and out["same"]
    assert out["loader"] == "SourceFileLoader/SourceFileLoader"
