"""Many prompts: ``accdiffusion batch PROMPTS_FILE --output DIR``.

A prompts file is either JSON lines (``.jsonl`` / ``.ndjson``, or a file whose
first non-blank line starts with ``{``), one object per line with a
``prompt``, an optional run folder ``name`` and any per-prompt settings
(``seed``, ``scale``, ``height``, ``steps``, ...), or plain text, one prompt
per line. Blank lines are skipped. Every line is checked before the model
loads; a line that is not valid JSON, names an unknown setting or has a bad
value is reported with its line number and skipped, and the others run.

Each line runs as :func:`accdiffusion.generate` on a pipeline loaded once
(per process, or per Ray worker with ``--ray``) and writes its own run
folder; ``batch-summary.json`` in the output folder lists every line's
outcome.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

import attrs

from .errors import AccDiffusionError, SettingsError
from .settings import Settings

#: Settings fixed for the whole batch (the pipeline is loaded once with them).
BATCH_WIDE = ("dtype", "device", "offload")
#: Keys of a JSON line besides the settings.
LINE_KEYS = ("prompt", "name")
SUMMARY = "batch-summary.json"


@attrs.frozen
class Line:
    """One prompt of a batch: its 1-based ``number`` in the file, the prompt,
    its per-line settings and run folder name; ``error`` when it is refused."""

    number: int
    prompt: str = ""
    options: dict = attrs.field(factory=dict)
    name: Optional[str] = None
    error: Optional[str] = None


def _line_fields() -> list[str]:
    return [f.name for f in attrs.fields(Settings) if f.name != "prompt" and f.name not in BATCH_WIDE]


def parse_prompts(path: str | os.PathLike) -> list[Line]:
    """The lines of a prompts file (blank lines skipped); a line that cannot
    be read comes back with ``error`` set."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"prompts file {str(path)!r} cannot be read: {exc}") from None
    rows = [(k + 1, raw) for k, raw in enumerate(text.splitlines()) if raw.strip()]
    as_json = p.suffix.lower() in (".jsonl", ".ndjson") or (bool(rows) and rows[0][1].lstrip().startswith("{"))
    fields = _line_fields()
    lines = []
    for number, raw in rows:
        if not as_json:
            lines.append(Line(number, raw.strip()))
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            lines.append(Line(number, error=f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if isinstance(obj, str):
            obj = {"prompt": obj}
        if not isinstance(obj, dict):
            lines.append(Line(number, error=f"a line must be a JSON object or string, not {type(obj).__name__}"))
            continue
        error = None
        for key in obj:
            if key in BATCH_WIDE:
                error = f"{key!r} is set for the whole batch: pass --{key} on the command line"
            elif key not in fields and key not in LINE_KEYS:
                close = difflib.get_close_matches(str(key), fields + list(LINE_KEYS), n=3, cutoff=0.6)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                error = f"unknown setting {key!r}{hint}"
            if error:
                break
        prompt = obj.get("prompt")
        if error is None and not isinstance(prompt, str):
            error = "no \"prompt\" string" if prompt is None else f"prompt={prompt!r} is not a string"
        name = obj.get("name")
        if error is None and name is not None:
            from .output import check_run_name

            try:
                check_run_name(name)
            except SettingsError as exc:
                error = str(exc)
        if error:
            lines.append(Line(number, error=error))
            continue
        options = {k: v for k, v in obj.items() if k not in LINE_KEYS}
        lines.append(Line(number, prompt, options, name))
    return lines


def line_options(base: dict[str, Any], line: Line, host: Any) -> dict[str, Any]:
    """The keywords of ``line``'s run: the command line's ``base`` with the
    line's own settings on top; plugin options (``plugin_options`` and aliases
    such as ``c``) of both are merged, the line's winning."""
    from .api import check_options

    ours = check_options(dict(line.options), host)
    theirs = check_options(dict(base), host)
    merged = {**theirs, **ours}
    plugins = {**dict(theirs.get("plugin_options") or {}), **dict(ours.get("plugin_options") or {})}
    if plugins:
        merged["plugin_options"] = plugins
    return merged


def check_lines(lines: list[Line], base: dict[str, Any], host: Any, info: Optional[dict]) -> list[Line]:
    """Each line's settings checked (values, stage names, sizes against the
    model's configs ``info``) before the model loads; refused lines get ``error``."""
    from .api import check_stage_names, selected_stages
    from .settings import plan_sizes

    out = []
    for line in lines:
        if line.error is None:
            try:
                settings = Settings(prompt=line.prompt, **line_options(base, line, host))
                check_stage_names(settings, host, {})
                host.check_options(settings, selected_stages(settings, {}))
                if info is not None:
                    plan_sizes(settings, info["native_size"], info["vae_scale_factor"])
            except (AccDiffusionError, TypeError, ValueError) as exc:
                line = attrs.evolve(line, error=str(exc))
        out.append(line)
    return out


def run_folder_name(line: Line, seed: int) -> str:
    return line.name or f"line{line.number:04d}-seed{seed}"


def run_line(pipeline: Any, host: Any, line: Line, base: dict[str, Any], out_dir: str, *, model: dict[str, Any],
             prompts_file: str, pictures: bool = True) -> dict[str, Any]:
    """Generate one line on a loaded ``pipeline`` and write its run folder;
    returns the line's summary entry (``status`` ``ok`` or ``failed``)."""
    from .api import generate
    from .output import write_run

    t0 = time.perf_counter()
    entry: dict[str, Any] = {"line": line.number, "prompt": line.prompt}
    try:
        result = generate(line.prompt, pipeline=pipeline, host=host, **line_options(base, line, host))
        record = dict(result.record)
        record["model"] = {**record["model"], **model}
        record["batch"] = {"prompts_file": prompts_file, "line": line.number}
        result = attrs.evolve(result, record=record)
        folder = write_run(result, out_dir, run_folder_name(line, result.seed), attention_pictures=pictures)
        entry.update(status="ok", folder=folder.name, seed=result.seed, warnings=list(result.warnings))
    except Exception as exc:  # noqa: BLE001 - a failed line is reported, the batch goes on
        entry.update(status="failed", error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, AccDiffusionError)
                     else str(exc))
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


class Worker:
    """Loads the pipeline once and runs lines on it (in this process, or as a Ray actor)."""

    def __init__(self, location: str, dtype: str, device: str, offload: str, model_config: Optional[str],
                 threads: Optional[int] = None) -> None:
        import torch

        from .loading import load_pipeline
        from .plugins import PluginHost

        if threads:
            torch.set_num_threads(int(threads))
        self.host = PluginHost()
        self.pipeline = load_pipeline(location, dtype, device, offload=offload, single_file_config=model_config,
                                      families=self.host.families())

    def run(self, line: Line, base: dict[str, Any], out_dir: str, model: dict[str, Any], prompts_file: str,
            pictures: bool) -> dict[str, Any]:
        return run_line(self.pipeline, self.host, line, base, out_dir, model=model, prompts_file=prompts_file,
                        pictures=pictures)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (:class:`SettingsError` naming ``address``) when a ``HOST:PORT``
    or ``ray://HOST:PORT`` Ray address does not accept connections."""
    if address in ("local", "auto"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SettingsError(f"--ray {address!r} is not allowed: 'local', 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SettingsError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def _start_ray(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise SettingsError("--ray needs Ray: pip install 'accdiffusion-core[ray]'") from None
    check_ray_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    if address == "local":
        kwargs["num_cpus"] = os.cpu_count() or 1
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError and others
        raise SettingsError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    return ray


def run_batch(lines: list[Line], base: dict[str, Any], out_dir: str, *, location: str, model: dict[str, Any],
              prompts_file: str, model_config: Optional[str] = None, pictures: bool = True,
              ray_address: Optional[str] = None, progress: Optional[Callable[[int], Any]] = None) -> dict[str, Any]:
    """Run the valid ``lines`` (plain: one loaded pipeline in this process;
    ``ray_address``: one Ray worker per GPU, or per CPU on a cluster without
    GPUs) and write ``batch-summary.json``; returns the summary."""
    t0 = time.perf_counter()
    todo = [line for line in lines if line.error is None]
    entries: dict[int, dict[str, Any]] = {
        line.number: {"line": line.number, "status": "invalid", "error": line.error}
        for line in lines if line.error is not None}
    bar = progress(len(todo)) if progress is not None else None
    wide = {k: base.get(k, attrs.fields_dict(Settings)[k].default) for k in BATCH_WIDE}
    workers = 0
    if todo and ray_address is None:
        worker = Worker(location, wide["dtype"], wide["device"], wide["offload"], model_config)
        workers = 1
        for line in todo:
            entries[line.number] = worker.run(line, base, out_dir, model, prompts_file, pictures)
            if bar is not None:
                bar.update(1)
    elif todo:
        ray = _start_ray(ray_address)
        try:
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            slots = gpus or max(1, int(resources.get("CPU", 1)))
            workers = max(1, min(slots, len(todo)))
            options = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
            actor = ray.remote(**options)(Worker)
            device = wide["device"] if gpus or wide["device"] not in ("auto", "cuda") else "cpu"
            pool = [actor.remote(location, wide["dtype"], device, wide["offload"], model_config,
                                 None if gpus else 1) for _ in range(workers)]
            pending = {}
            queue = list(todo)
            for w in pool:
                if queue:
                    line = queue.pop(0)
                    pending[w.run.remote(line, base, out_dir, model, prompts_file, pictures)] = (w, line)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                w, line = pending.pop(ref)
                try:
                    entries[line.number] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died
                    entries[line.number] = {"line": line.number, "prompt": line.prompt, "status": "failed",
                                            "error": f"Ray worker failed: {exc}"}
                if bar is not None:
                    bar.update(1)
                if queue:
                    line = queue.pop(0)
                    pending[w.run.remote(line, base, out_dir, model, prompts_file, pictures)] = (w, line)
        finally:
            ray.shutdown()
    if bar is not None:
        bar.close()
    ordered = [entries[k] for k in sorted(entries)]
    summary = {
        "prompts_file": prompts_file,
        "model": model,
        "runner": "plain" if ray_address is None else f"ray {ray_address}",
        "workers": workers,
        "lines": len(ordered),
        "ok": sum(e["status"] == "ok" for e in ordered),
        "failed": sum(e["status"] == "failed" for e in ordered),
        "invalid": sum(e["status"] == "invalid" for e in ordered),
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": ordered,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{SUMMARY}.{os.getpid()}.partial"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, out / SUMMARY)
    return summary
