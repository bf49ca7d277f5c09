"""Run folders: names and output folders checked up front, concurrent runs
with the same name never lose an image, folders get the umask's permissions."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from accdiffusion.errors import SettingsError
from accdiffusion.output import MAX_NAME_BYTES, check_output_dir, check_run_name, write_run


def fake_result(colour: int = 0) -> SimpleNamespace:
    return SimpleNamespace(image=Image.new("RGB", (4, 4), (colour, 0, 0)), stage_images=[], attention=None, control_images=(),
                           phases=[], plan=None, prompt_decomposer=None, record={"colour": colour})


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", "../x", "a\0b", "tab\there", "new\nline",
                                  "x" * (MAX_NAME_BYTES + 1), "é" * 101])
def test_bad_run_names_are_refused(name):
    with pytest.raises(SettingsError, match="run name"):
        check_run_name(name)


def test_good_run_names():
    for name in ("run", "a.b_c-1", "x" * MAX_NAME_BYTES, "20240101-120000-seed1"):
        assert check_run_name(name) == name


def test_output_folder_checks(tmp_path, monkeypatch):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(SettingsError, match=f"output folder {str(afile)!r} exists and is a file"):
        check_output_dir(afile)
    with pytest.raises(SettingsError, match=f"{str(afile)!r} is a file, not a folder"):
        check_output_dir(afile / "sub" / "deeper")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(SettingsError, match="is not writable"):
        check_output_dir(tmp_path / "out")


def test_write_run_refuses_a_bad_name_before_writing(tmp_path):
    with pytest.raises(SettingsError, match="run name '../escape'"):
        write_run(fake_result(), tmp_path / "out", "../escape", attention_pictures=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_run_folder_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        folder = write_run(fake_result(), tmp_path, "run", attention_pictures=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755


def test_an_existing_name_gets_a_suffix(tmp_path):
    (tmp_path / "run").mkdir()  # even an empty folder is never replaced
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / "keep").write_text("x")
    folder = write_run(fake_result(), tmp_path, "run", attention_pictures=False)
    assert folder == tmp_path / "run-2"
    assert os.listdir(tmp_path / "run") == [] and os.listdir(tmp_path / "run-1") == ["keep"]


def _check_folders(out: Path, count: int) -> None:
    names = sorted(os.listdir(out))
    assert names == sorted(["run"] + [f"run-{k}" for k in range(1, count)]), names
    colours = sorted(__import__("json").loads((out / n / "record.json").read_text())["colour"] for n in names)
    assert colours == list(range(count))  # every run's own files, none lost or overwritten
    for n in names:
        assert sorted(os.listdir(out / n)) == ["image.png", "record.json"]


def test_concurrent_threads_with_the_same_name(tmp_path):
    count = 16
    barrier = threading.Barrier(count)
    errors = []

    def one(k):
        try:
            barrier.wait()
            write_run(fake_result(k), tmp_path, "run", attention_pictures=False)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_folders(tmp_path, count)


def _process_run(args):
    out, k, barrier = args
    barrier.wait()
    return str(write_run(fake_result(k), out, "run", attention_pictures=False))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_processes_with_the_same_name(tmp_path):
    count = 8
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(count)
    procs = [ctx.Process(target=_process_run, args=((tmp_path, k, barrier),)) for k in range(count)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * count
    _check_folders(tmp_path, count)
