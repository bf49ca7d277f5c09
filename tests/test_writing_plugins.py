"""docs/writing-plugins.md walks an author from an empty folder to a tested,
published plugin; these tests take the same walk.

The example distribution's files are the page's code blocks marked
``<!-- file: PATH -->``. They are written to a folder, built into a wheel with
pip (as the page's publishing step does), and the wheel is installed into a
folder of its own (``pip install --target``) that the subprocesses get on
``PYTHONPATH``: the entry point is found through the dist-info there, and the
environment running the tests is left as it was. Then the plugin is listed
with its options as the page shows, its own test suite (the kit's contract
tests) passes, the page's command runs on the shipped shapes model and the run
record keeps the plugin and its option value, and the page's Python example
runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import attrs
import pytest

import accdiffusion
from accdiffusion import Settings, stages
from accdiffusion.cli import _plugin_options, build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "writing-plugins.md"
TEXT = PAGE.read_text(encoding="utf-8")

#: ``<!-- KIND: ARGUMENT -->`` right above a fenced block: the block's text.
MARKED = re.compile(r"^<!-- (file|output|record): (.+?) -->\n```[\w-]*\n(.*?)^```", re.S | re.M)


def marked(kind: str) -> list[tuple[str, str]]:
    return [(arg, body) for k, arg, body in MARKED.findall(TEXT) if k == kind]


FILES = dict(marked("file"))
ENTRY = re.search(r"^\[project\.entry-points\.accdiffusion\]\n([\w-]+) = \"([\w.]+):(\w+)\"$",
                  FILES.get("pyproject.toml", ""), re.M)
DISTRIBUTION = re.search(r'^name = "([\w-]+)"$', FILES.get("pyproject.toml", ""), re.M)
PACKAGE = ENTRY.group(2).split(".")[0] if ENTRY else ""


def sh_lines() -> list[list[str]]:
    """The words of every command line in the page's ```sh blocks."""
    out = []
    for block in re.findall(r"^```sh\n(.*?)^```", TEXT, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                out.append(shlex.split(line, comments=True))
    return out


def subprocess_env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("ACCDIFFUSION_PLUGINS", None)  # every installed plugin, the example included
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The example distribution's folder, written from the page."""
    folder = tmp_path_factory.mktemp("example") / DISTRIBUTION.group(1)
    for rel, body in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return folder


def setuptools_builds(pyproject: str) -> bool:
    """Whether this environment's setuptools satisfies the example's build requirement."""
    try:
        import setuptools
    except ImportError:
        return False
    need = re.search(r'requires = \["setuptools>=([\d.]+)"\]', pyproject)
    version = tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    return need is None or version >= tuple(int(p) for p in need.group(1).split(".")[:2])


@pytest.fixture(scope="module")
def wheel(example) -> Path:
    """The page's `pip wheel --no-deps -w dist .`: offline with this environment's
    setuptools when it is recent enough, else as written (pip fetches setuptools)."""
    offline = ["--no-build-isolation", "--no-index"] if setuptools_builds(FILES["pyproject.toml"]) else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "--disable-pip-version-check", "-q",
         "-w", "dist", "."], os.environ.copy(), example)
    wheels = list((example / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """A folder holding the installed example (package and dist-info), for ``PYTHONPATH``."""
    target = tmp_path_factory.mktemp("site")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
         "--target", str(target), str(wheel)], os.environ.copy(), wheel.parent)
    return target


@pytest.fixture
def installed_plugin(site, monkeypatch):
    """The installed example importable in this process (and its entry point
    visible to a PluginHost) for one test; removed again afterwards."""
    monkeypatch.syspath_prepend(str(site))
    yield __import__(ENTRY.group(2), fromlist=[ENTRY.group(3)])
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


# -- the page itself -----------------------------------------------------------


def test_the_page_holds_a_whole_distribution():
    assert ENTRY, "the page's pyproject.toml declares no [project.entry-points.accdiffusion] object"
    assert DISTRIBUTION and PACKAGE
    assert ENTRY.group(2) == f"{PACKAGE}.plugin", "the entry point names <package>.plugin:<object>"
    assert re.search(r'"accdiffusion-core"', FILES["pyproject.toml"])
    assert 'build-backend = "setuptools.build_meta"' in FILES["pyproject.toml"]
    assert f"src/{PACKAGE}/plugin.py" in FILES and f"src/{PACKAGE}/__init__.py" in FILES
    assert any(re.fullmatch(r"tests/test_\w+\.py", rel) for rel in FILES)
    assert "StagePlugin" in FILES[f"src/{PACKAGE}/plugin.py"]
    # the folder tree at the top of the walk shows every file
    tree = re.search(r"^### 1\. The folder\n.*?^```\n(.*?)^```", TEXT, re.S | re.M).group(1)
    for rel in FILES:
        assert Path(rel).name in tree, f"the folder tree does not show {rel}"


def test_the_pages_command_lines_parse_with_the_example(installed_plugin):
    """Every `accdiffusion generate` line of the page parses, and its settings and
    plugin options are accepted, with the example plugin installed."""
    host = accdiffusion.PluginHost()  # the installed plugins: the example's entry point is on sys.path now
    assert "grid" in host.registry.names("tiler")
    parser = build_parser(host)
    fields = [f.name for f in attrs.fields(Settings) if f.name not in ("prompt", "plugin_options")]
    commands = 0
    for words in sh_lines():
        if words[:2] != ["accdiffusion", "generate"]:
            continue
        args = parser.parse_args(words[1:])
        settings = Settings(prompt=args.prompt, plugin_options=_plugin_options(args),
                            **{f: getattr(args, f) for f in fields if hasattr(args, f)})
        host.check_options(settings, {stage: getattr(settings, stage) for stage in stages.STAGES})
        commands += 1
    assert commands >= 2


# -- build, install, list --------------------------------------------------------


def test_the_wheel_declares_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert f"[accdiffusion]\n{ENTRY.group(1)} = {ENTRY.group(2)}:{ENTRY.group(3)}" in entry_points
    assert f"{PACKAGE}/plugin.py" in names


def test_plugins_lists_the_example_with_its_options(site, tmp_path):
    """`accdiffusion plugins --options` prints every line the page shows."""
    out = run([sys.executable, "-m", "accdiffusion", "plugins", "--options"], subprocess_env(site), tmp_path).stdout
    shown = marked("output")
    assert len(shown) >= 2
    for command, body in shown:
        assert command == "accdiffusion plugins --options"
        for line in body.rstrip("\n").splitlines():
            assert line in out.splitlines(), f"the page shows {line!r}; the command printed:\n{out}"


def test_the_examples_own_tests_pass(site, example):
    """`pytest` in the example's folder: the kit's contract tests and its own,
    against the installed distribution."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          env=subprocess_env(site), cwd=example, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = int(re.search(r"(\d+) passed", proc.stdout).group(1))
    tests = len(re.findall(r"^def test_", FILES["tests/test_grid.py"], re.M))
    assert passed > tests, f"only {passed} tests passed: the contract class added none?\n{proc.stdout}"


# -- a run with the plugin ---------------------------------------------------------


def test_the_pages_command_runs_and_the_record_keeps_the_option(site, tmp_path):
    command = next(words for words in sh_lines() if words[:2] == ["accdiffusion", "generate"]
                   and "--tiler" in words and not any(w.startswith("--option") for w in words))
    # the page's command on the default (shapes) model, with few steps and 2x to keep it short
    argv = [sys.executable, "-m", *command, "--steps", "2", "--scale", "2", "-q", "-o", str(tmp_path), "--name", "run"]
    proc = run(argv, subprocess_env(site), tmp_path)
    assert proc.stdout.strip().endswith("image.png")
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    (_, shown), = marked("record")
    assert record["stages"]["tiler"] == json.loads(shown)
    assert record["plugins"]["tiler"] == "grid"
    assert record["model"]["name"] == "shapes"
    # the windows of the upscaling phase are the example tiler's
    sys.path.insert(0, str(site))
    try:
        tiler_module = __import__(f"{PACKAGE}.tiler", fromlist=["GridTiler"])
        plan = record["plan"]
        layout = tiler_module.GridTiler(**record["stages"]["tiler"]["options"]).layout(
            *plan["latent_sizes"][-1], plan["window"], plan["stride"], None)
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
    assert record["phases"][-1]["windows"] == [[w.top, w.left, w.height, w.width] for w in layout.windows]


def test_the_pages_python_example_runs(installed_plugin, monkeypatch):
    """The page's Python block, with few steps at 2x (the rest as written)."""
    block = re.search(r"^### 7\. Use it from Python\n.*?^```python\n(.*?)^```", TEXT, re.S | re.M).group(1)
    real = accdiffusion.generate
    calls = []

    def quick(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **{**kwargs, "steps": 2, "scale": 2})

    monkeypatch.setattr(accdiffusion, "generate", quick)
    exec(compile(block, f"{PAGE.name} (Python example)", "exec"), {"__name__": "_writing_plugins_example"})
    assert len(calls) == 2


def test_the_pages_refusals(installed_plugin, tmp_path, capsys):
    """The refusals the page quotes, from the command line (before any model loads)."""
    from accdiffusion import cli

    m = re.search(r"`(--grid-overlap [^`]+)` is refused\s+\(`accdiffusion: error:\s+(.+?)`, status 2\)", TEXT, re.S)
    assert m, "the page quotes no refused --grid-overlap value"
    prompt = "a red circle on a white background"
    assert cli.main(["generate", prompt, "--tiler", "grid", *m.group(1).split(), "-o", str(tmp_path)]) == 2
    assert " ".join(capsys.readouterr().err.split()) == "accdiffusion: error: " + " ".join(m.group(2).split())
    assert "`--grid-overlap 0.75` without `--tiler grid`" in " ".join(TEXT.split())
    assert cli.main(["generate", prompt, "--grid-overlap", "0.75", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "option grid.overlap='0.75' is for the tiler 'grid', which is not selected" in err
    assert not any(tmp_path.iterdir())
