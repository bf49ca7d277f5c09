"""``accdiffusion ui``: a web page for generating without typing commands.

The pipeline loads once when the app starts. :class:`Engine` holds it and
runs one generation at a time (it knows nothing of the web page and imports
no gradio); :func:`build_app` builds the Gradio page around it and
:func:`serve` starts it. Gradio is an optional extra
(``pip install 'accdiffusion-core[ui]'``) imported only here, inside
:func:`build_app`.

A run on the page:

* every field is checked as the CLI checks it (``Settings``, the stage names,
  the sizes against the model's native size) before anything starts; a bad
  value is shown as a message under its field;
* each phase's progress bar fills as its steps run, and each phase's image
  appears as soon as the phase ends (the run keeps its stage images, and the
  first decode after a phase ends is that phase's image);
* the run folder (image, ``record.json``, stage images, attention-map and
  patch-prompt pictures) is written with :func:`accdiffusion.write_run` when
  the run ends, and the page shows its pictures and offers ``record.json``;
* the cancel button stops the run between two steps; nothing is written.
"""

import os
import queue
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import attrs

from .errors import AccDiffusionError, SettingsError
from .settings import Settings

#: The fields of the page, in order, with the Settings field each one sets.
FIELDS = ("prompt", "negative_prompt", "scale", "height", "width", "steps", "seed", "guidance_scale",
          "multi_guidance_scale", "c")

_SETTINGS_DEFAULTS = {f.name: f.default for f in attrs.fields(Settings) if f.default is not attrs.NOTHING}


class Cancelled(Exception):
    """Raised from a progress bar's ``update()`` when the run was cancelled."""


@attrs.define
class Event:
    """What a running generation reports to the page.

    ``kind``: ``"bar"`` (a phase started: ``label``, ``total``), ``"step"``
    (``label``, ``done`` of ``total``), ``"image"`` (a phase's image:
    ``label``, ``image``), ``"done"`` (``result``, ``folder``) or ``"error"``
    (``error``).
    """

    kind: str
    label: str = ""
    done: int = 0
    total: int = 0
    image: Any = None
    result: Any = None
    folder: Optional[Path] = None
    error: Optional[BaseException] = None


def field_of(message: str, fields: tuple[str, ...] = FIELDS) -> Optional[str]:
    """The page field an error message is about: the field it names first
    (as ``name`` or ``--flag-name``), or ``None``."""
    found = []
    for name in fields:
        for pattern in (rf"(?<![\w-]){re.escape(name)}(?![\w-])", rf"--{re.escape(name.replace('_', '-'))}(?![\w-])"):
            m = re.search(pattern, message)
            if m:
                found.append((m.start(), -len(name), name))
    return min(found)[2] if found else None


class _Bar:
    """A progress bar that reports each step and raises :class:`Cancelled` once cancelled."""

    def __init__(self, run: "_Run", label: str, total: int) -> None:
        self.run, self.label, self.total, self.done = run, label, total, 0
        run.check()
        run.emit(Event("bar", label, 0, total))

    def update(self, n: int = 1) -> None:
        self.done += n
        self.run.emit(Event("step", self.label, self.done, self.total))
        self.run.check()

    def close(self) -> None:
        if self.label.startswith("phase"):
            self.run.pending_phase = self.label


class _Run:
    def __init__(self, emit: Callable[[Event], None], cancel: threading.Event) -> None:
        self.emit, self.cancel = emit, cancel
        self.pending_phase: Optional[str] = None

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")

    def bar(self, label: str, total: int) -> _Bar:
        return _Bar(self, label, total)

    def decoded(self, images: Any) -> None:
        """The first decode after a phase ends is that phase's image."""
        if self.pending_phase is not None:
            from .sampler import to_image

            label, self.pending_phase = self.pending_phase, None
            self.emit(Event("image", label, image=to_image(images[:1])))


def _preview_host(engine: "Engine") -> Any:
    from .plugins import PluginHost

    class PreviewHost(PluginHost):
        """A plugin host whose adapters report every decoded image to the current run."""

        def adapt(self, pipeline: Any, settings: Any) -> Any:
            adapter = super().adapt(pipeline, settings)
            decode = adapter.decode_latents

            def decode_latents(latents: Any) -> Any:
                images = decode(latents)
                run = engine._current
                if run is not None:
                    run.decoded(images)
                return images

            adapter.decode_latents = decode_latents
            return adapter

    return PreviewHost()


class Engine:
    """The loaded pipeline and one generation at a time.

    ``model``: a registered name, folder or hub id (default: the ``shapes``
    model); ``output``: where run folders are written. ``device`` and
    ``dtype`` as for ``accdiffusion generate``.
    """

    def __init__(self, model: Optional[str] = None, *, output: str | os.PathLike = "outputs",
                 device: Optional[str] = None, dtype: Optional[str] = None) -> None:
        from .api import DEFAULT_MODEL, resolve_model
        from .loading import check_device, load_pipeline
        from .output import check_output_dir

        self.output = check_output_dir(output).absolute()
        self.host = _preview_host(self)
        self.model_name = DEFAULT_MODEL if model is None else model
        self.defaults = self.host.model_defaults(self.model_name)
        self.location = resolve_model(model, self.host)
        self.fixed = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        base = Settings(prompt="", **{**self.defaults, **self.fixed})
        check_device(base.device)
        self.pipeline = load_pipeline(self.location, base.dtype, base.device, offload=base.offload,
                                      families=self.host.families())
        adapter = self.host.adapt(self.pipeline, base)
        self.native_size = int(adapter.native_size)
        self.vae_scale_factor = int(adapter.vae_scale_factor)
        self._lock = threading.Lock()
        self._current: Optional[_Run] = None

    # -- the fields ---------------------------------------------------------

    def initial(self) -> dict[str, Any]:
        """Each field's starting value: the model's recommendation, else the Settings default."""
        from .stages import STAGES

        values = {name: self.defaults.get(name, _SETTINGS_DEFAULTS.get(name, self._alias_default(name)))
                  for name in FIELDS if name != "prompt"}
        values["prompt"] = ""
        for stage in STAGES:
            values[stage] = self.defaults.get(stage, _SETTINGS_DEFAULTS[stage])
        return values

    def _alias_default(self, name: str) -> Any:
        """The default of the plugin option a field sets through its alias (``c``)."""
        targets = self.host.registry.aliases().get(name)
        return targets[0][1].default if targets else None

    def choices(self) -> dict[str, list[str]]:
        """The installed names of every stage (``none`` included where it switches a stage off)."""
        from .plugins import NO_GLOBAL_GUIDANCE
        from .stages import STAGES

        out = {}
        for stage in STAGES:
            names = [reg.name for reg in self.host.registry.registrations(stage)]
            if stage == "global_guidance" and NO_GLOBAL_GUIDANCE not in names:
                names.append(NO_GLOBAL_GUIDANCE)
            out[stage] = names
        return out

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """Settings keywords from the page's values (``None`` height/width/seed: left to the defaults)."""
        opts = {**self.defaults}
        for name, value in values.items():
            if name == "prompt":
                continue
            if name in ("height", "width", "seed") and value is None:
                opts.pop(name, None)
                continue
            opts[name] = value
        opts.update(self.fixed)
        opts["save_stages"] = True
        return opts

    def check(self, values: dict[str, Any]) -> Settings:
        """Every check the CLI makes before a run: :class:`AccDiffusionError` for a bad value."""
        from .api import check_options, check_stage_names, selected_stages
        from .settings import plan_sizes

        prompt = values.get("prompt")
        settings = Settings(prompt="" if prompt is None else prompt, **check_options(self.options(values), self.host))
        check_stage_names(settings, self.host, {})
        self.host.check_options(settings, selected_stages(settings, {}))
        plan_sizes(settings, self.native_size, self.vae_scale_factor)
        return settings

    # -- a run ---------------------------------------------------------------

    def run(self, values: dict[str, Any], emit: Callable[[Event], None] = lambda e: None,
            cancel: Optional[threading.Event] = None, *, name: Optional[str] = None) -> tuple[Any, Path]:
        """Generate with the page's ``values``, report to ``emit``, write the run
        folder; returns the result and the folder. Raises :class:`Cancelled`
        (nothing written) once ``cancel`` is set, between two steps."""
        from .api import generate
        from .output import write_run

        settings = self.check(values)
        cancel = cancel or threading.Event()
        with self._lock:
            run = _Run(emit, cancel)
            run.check()
            self._current = run
            try:
                result = generate(settings.prompt, pipeline=self.pipeline, host=self.host, progress=run.bar,
                                  **self.options(values))
            finally:
                self._current = None
            run.check()
            record = dict(result.record)
            record["model"] = {**record.get("model", {}), "location": self.location, "name": self.model_name,
                               "defaults": self.defaults}
            result = attrs.evolve(result, record=record)
            name = name or time.strftime("%Y%m%d-%H%M%S") + f"-seed{result.seed}"
            folder = write_run(result, self.output, name)
        return result, folder

    def start(self, values: dict[str, Any], cancel: threading.Event) -> "queue.Queue[Event]":
        """:meth:`run` in a worker thread; its events, ending with ``done`` or ``error``, go to the queue."""
        events: "queue.Queue[Event]" = queue.Queue()

        def work() -> None:
            try:
                result, folder = self.run(values, events.put, cancel)
            except BaseException as exc:  # noqa: BLE001 - every failure is reported to the page
                events.put(Event("error", error=exc))
            else:
                events.put(Event("done", result=result, folder=folder))

        thread = threading.Thread(target=work, name="accdiffusion-ui-run", daemon=True)
        thread.start()
        events.thread = thread  # type: ignore[attr-defined]
        return events


def draw_seed() -> int:
    """A random seed the page shows before the run starts."""
    return secrets.randbelow(2**32)


# -- the page ------------------------------------------------------------------


def _progress_html(bars: dict[str, list[int]], status: str = "") -> str:
    rows = []
    for label, (done, total) in bars.items():
        share = 100 if total == 0 else round(100 * done / total)
        mark = " done" if done >= total else ""
        rows.append(
            f'<div class="acc-phase{mark}" data-phase="{label}">'
            f'<span class="acc-label">{label}</span>'
            f'<span class="acc-track"><span class="acc-fill" style="width:{share}%"></span></span>'
            f'<span class="acc-count">{done}/{total}</span></div>')
    if status:
        rows.append(f'<div class="acc-status">{status}</div>')
    return '<div id="acc-progress">' + "".join(rows) + "</div>"


_CSS = """
#acc-progress .acc-phase {display:flex; align-items:center; gap:.6em; margin:.2em 0; font-family:monospace}
#acc-progress .acc-label {min-width:13em}
#acc-progress .acc-track {flex:1; height:.8em; background:#e5e7eb; border-radius:.4em; overflow:hidden}
#acc-progress .acc-fill {display:block; height:100%; background:#f97316}
#acc-progress .acc-phase.done .acc-fill {background:#16a34a}
#acc-progress .acc-status {margin-top:.4em}
.acc-error, .acc-error * {color:#b91c1c !important; font-weight:600}
"""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_app(engine: Engine) -> Any:
    """The Gradio page (a ``gr.Blocks``) around ``engine``, with its queue set up:
    one generation at a time, further requests wait with their position shown."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    init = engine.initial()
    choices = engine.choices()
    native = engine.native_size
    cancels: dict[str, threading.Event] = {}
    labels = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "scale": "Scale (x native size)",
              "height": "Height (px, 0: scale x native)", "width": "Width (px, 0: scale x native)",
              "steps": "Steps per phase", "seed": "Seed", "guidance_scale": "Guidance scale",
              "multi_guidance_scale": "Local windows' guidance scale",
              "c": "c (patch-prompt threshold)"}
    stage_names = list(choices)

    with gr.Blocks(title="accdiffusion") as demo:
        gr.Markdown(f"# accdiffusion\nModel **{engine.model_name}** (native {native} px). "
                    "Fields start at the model's recommended values.")
        fields: dict[str, Any] = {}
        errors: dict[str, Any] = {}

        def error_box(name: str) -> None:
            errors[name] = gr.Markdown("", elem_id=f"error-{name.replace('_', '-')}", elem_classes="acc-error")

        with gr.Row():
            with gr.Column(scale=1):
                fields["prompt"] = gr.Textbox(label=labels["prompt"], lines=2, elem_id="prompt",
                                              placeholder="a red circle and a blue square on a white background")
                error_box("prompt")
                fields["negative_prompt"] = gr.Textbox(label=labels["negative_prompt"], value=init["negative_prompt"],
                                                       elem_id="negative-prompt")
                error_box("negative_prompt")
                with gr.Row():
                    for name in ("scale", "height", "width"):
                        with gr.Column(min_width=90):
                            fields[name] = gr.Number(label=labels[name], value=init[name] or 0, precision=0,
                                                     elem_id=name.replace("_", "-"))
                            error_box(name)
                with gr.Row():
                    with gr.Column(min_width=90):
                        fields["steps"] = gr.Number(label=labels["steps"], value=init["steps"], precision=0,
                                                    elem_id="steps")
                        error_box("steps")
                    with gr.Column(min_width=90):
                        fields["seed"] = gr.Number(label=labels["seed"], value=0, precision=0, elem_id="seed")
                        random_seed = gr.Checkbox(label="random (shows the seed it drew)", value=True,
                                                  elem_id="random-seed")
                        error_box("seed")
                with gr.Row():
                    for name in ("guidance_scale", "multi_guidance_scale", "c"):
                        with gr.Column(min_width=90):
                            fields[name] = gr.Number(label=labels[name], value=init[name],
                                                     elem_id=name.replace("_", "-"))
                            error_box(name)
                with gr.Accordion("Stages", open=False):
                    for stage in stage_names:
                        fields[stage] = gr.Dropdown(choices=choices[stage], value=init[stage], label=stage,
                                                    elem_id=stage.replace("_", "-"))
                        error_box(stage)
                with gr.Row():
                    run_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown("", elem_id="status")
                progress = gr.HTML(_progress_html({}), elem_id="progress")
            with gr.Column(scale=1):
                final = gr.Image(label="Final image", type="pil", elem_id="final-image", interactive=False,
                                 format="png", height=360)
                phases = gr.Gallery(label="Each phase's image", elem_id="phase-images", columns=4, height="auto",
                                    format="png")
                patches = gr.Gallery(label="Patch prompts of each phase (windows on the image, their prompts)",
                                     elem_id="patch-prompts", columns=1, height="auto", format="png",
                                     object_fit="contain")
                attention = gr.Image(label="Attention maps (phase 1)", elem_id="attention-maps", type="filepath",
                                     interactive=False)
                record_file = gr.File(label="record.json", elem_id="record-file", interactive=False)
                with gr.Accordion("Record", open=False):
                    record_json = gr.JSON(elem_id="record-json")

        names = list(fields)
        outputs = [fields["seed"], status, progress, phases, final, patches, attention, record_file, record_json,
                   *errors.values()]
        error_names = list(errors)

        def out(seed: Any = gr.skip(), status_text: Any = gr.skip(), progress_html: Any = gr.skip(),
                phase_images: Any = gr.skip(), final_image: Any = gr.skip(), patch_images: Any = gr.skip(),
                attention_image: Any = gr.skip(), record_path: Any = gr.skip(), record: Any = gr.skip(),
                field_errors: Optional[dict[str, str]] = None) -> tuple:
            errs = [gr.skip()] * len(error_names) if field_errors is None else \
                [field_errors.get(name, "") for name in error_names]
            return (seed, status_text, progress_html, phase_images, final_image, patch_images, attention_image,
                    record_path, record, *errs)

        def failed(exc: BaseException) -> tuple:
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, AccDiffusionError):
                message = f"{type(exc).__name__}: {message}"
            field = field_of(message, tuple(names)) if isinstance(exc, AccDiffusionError) else None
            where = f" (see {labels.get(field, field)})" if field else ""
            return out(status_text=f"**Not run{where}:** {_escape(message)}",
                       field_errors={field: _escape(message)} if field else {})

        def run(data: dict, request: gr.Request) -> Iterator[tuple]:
            values = {name: data[fields[name]] for name in names}
            for name in ("height", "width"):
                if values[name] in (0, None):
                    values[name] = None  # 0 or empty: scale x native size
            if data[random_seed]:
                values["seed"] = draw_seed()
            seed_shown = values["seed"] if values["seed"] is not None else gr.skip()
            try:
                engine.check(values)
            except AccDiffusionError as exc:
                yield failed(exc)
                return
            except (TypeError, ValueError) as exc:  # a value of the wrong kind: a readable message all the same
                yield failed(SettingsError(str(exc)))
                return
            key = request.session_hash or "local"
            cancel = threading.Event()
            cancels[key] = cancel
            events = engine.start(values, cancel)
            bars: dict[str, list[int]] = {}
            gallery: list[tuple[Any, str]] = []
            yield out(seed=seed_shown, status_text="Running...", progress_html=_progress_html(bars),
                      phase_images=[], final_image=None, patch_images=[], attention_image=None,
                      record_path=None, record=None, field_errors={})
            try:
                while True:
                    try:
                        event = events.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    if event.kind in ("bar", "step"):
                        bars[event.label] = [event.done, event.total]
                        yield out(progress_html=_progress_html(bars))
                    elif event.kind == "image":
                        gallery.append((event.image, event.label))
                        yield out(phase_images=list(gallery))
                    elif event.kind == "error":
                        if isinstance(event.error, Cancelled):
                            yield out(status_text="**Cancelled** between two steps: nothing was written.",
                                      progress_html=_progress_html(bars, "cancelled"))
                        else:
                            yield failed(event.error)
                        return
                    elif event.kind == "done":
                        result, folder = event.result, event.folder
                        pictures = sorted((folder / "attention").glob("patch-prompts-scale-*.png"),
                                          key=lambda p: int(p.stem.rsplit("-", 1)[1]))
                        maps = folder / "attention" / "attention-maps.png"
                        warnings = "".join(f"\n\nwarning: {_escape(w)}" for w in result.warnings)
                        yield out(seed=result.seed,
                                  status_text=f"Done in {result.record.get('seconds')} s, seed {result.seed}: "
                                              f"`{folder}`{warnings}",
                                  progress_html=_progress_html(bars),
                                  final_image=result.image,
                                  patch_images=[(str(p), f"phase {p.stem.rsplit('-', 1)[1]}") for p in pictures],
                                  attention_image=str(maps) if maps.is_file() else None,
                                  record_path=str(folder / "record.json"), record=result.record)
                        return
            finally:
                cancel.set()  # a closed page or a cancelled event stops the run at its next step
                thread = getattr(events, "thread", None)
                if thread is not None:
                    thread.join(timeout=120)
                if cancels.get(key) is cancel:
                    del cancels[key]

        def cancel_run(request: gr.Request) -> str:
            event = cancels.get(request.session_hash or "local")
            if event is None:
                return "**Cancelled:** nothing of this page was running; a request waiting in the queue leaves it."
            event.set()
            return "**Cancelled** between two steps: nothing was written."

        run_event = run_button.click(run, inputs={*fields.values(), random_seed}, outputs=outputs, api_visibility="private",
                         concurrency_id="generation", concurrency_limit=1, show_progress="full",
                         show_progress_on=[progress])
        # the run's event is stopped too (and a request still in the queue leaves it); the
        # flag set first makes the worker stop at its next step, so nothing is written
        cancel_button.click(cancel_run, outputs=[status], queue=False, api_visibility="private", cancels=[run_event])

        # the API endpoint for gradio_client: prompt, scale, steps, seed -> final image, record
        with gr.Row(visible=False):
            api_prompt = gr.Textbox()
            api_scale = gr.Number(value=init["scale"], precision=0)
            api_steps = gr.Number(value=init["steps"], precision=0)
            api_seed = gr.Number(value=None, precision=0)
            api_image = gr.Image(type="pil", format="png")
            api_record = gr.JSON()
            api_button = gr.Button()

        def generate_api(prompt: str, scale: Optional[float], steps: Optional[float],
                         seed: Optional[float]) -> tuple[Any, dict]:
            """Generate one image; ``seed`` empty or negative draws one. Returns the image and the run record."""
            values = {**{k: v for k, v in init.items() if k in names}, "prompt": prompt or "",
                      "scale": init["scale"] if scale is None else scale,
                      "steps": init["steps"] if steps is None else steps,
                      "seed": draw_seed() if seed is None or seed < 0 else seed}
            values = {k: (int(v) if k in ("scale", "steps", "seed") and isinstance(v, float) and v.is_integer()
                          else v) for k, v in values.items()}
            try:
                result, folder = engine.run(values)
            except AccDiffusionError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
            return result.image, dict(result.record, run_folder=str(folder))

        api_button.click(generate_api, inputs=[api_prompt, api_scale, api_steps, api_seed],
                         outputs=[api_image, api_record], api_name="generate", concurrency_id="generation",
                         concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    demo.accdiffusion_css = _CSS  # given to launch() (gradio 6 takes css there)
    return demo


def serve(*, host: str = "127.0.0.1", port: int = 7860, model: Optional[str] = None,
          output: str | os.PathLike = "outputs", device: Optional[str] = None, dtype: Optional[str] = None,
          block: bool = True) -> Any:
    """Load the model, build the page and serve it on ``host:port``; with
    ``block`` (the command line) until interrupted."""
    engine = Engine(model, output=output, device=device, dtype=dtype)
    demo = build_app(engine)
    demo.launch(server_name=host, server_port=port, allowed_paths=[str(engine.output)], show_error=False,
                prevent_thread_lock=True, quiet=True, css=_CSS, footer_links=["api"])
    print(f"accdiffusion ui: serving model {engine.model_name!r} on http://{host}:{port} "
          f"(run folders in {engine.output}); Ctrl-C stops", flush=True)
    if not block:
        return demo
    try:
        while True:
            time.sleep(1)
    finally:
        demo.close()
