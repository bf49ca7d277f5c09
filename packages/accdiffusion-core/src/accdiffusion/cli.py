"""The ``accdiffusion`` command line.

``accdiffusion generate PROMPT`` runs one image and writes a run folder
(image, JSON record, optional stage images, attention and patch-prompt
pictures); ``accdiffusion plugins`` lists the installed stages and models.
Every flag's default is shown by ``--help``; they come from :class:`Settings`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from typing import Any, Iterator, Optional, Sequence

import attrs

from .errors import AccDiffusionError, DistributedError, ResourceError
from .settings import DTYPES, OFFLOAD, SCHEDULERS, Settings

_DEFAULTS = {f.name: f.default for f in attrs.fields(Settings) if f.default is not attrs.NOTHING}

_HELP = {
    "negative_prompt": "negative prompt for classifier-free guidance",
    "height": "target height in px (default: scale x native size)",
    "width": "target width in px (default: scale x native size)",
    "scale": "target size as a multiple of the native size, when height/width are not given",
    "steps": "denoising steps per phase",
    "seed": "random seed (default: drawn at random and saved in the record)",
    "guidance_scale": "CFG scale of phase 1 and the global (dilated) path",
    "multi_guidance_scale": "CFG scale of the local windows",
    "stride": "local window stride in latent px (default: half the native latent size)",
    "view_batch_size": "windows / dilated samples per UNet batch",
    "cosine_scale_1": "skip-residual exponent cs1",
    "cosine_scale_2": "local/global fusion exponent cs2",
    "progressive": "upscale one scale at a time (off: jump straight to the target)",
    "skip_residual": "blend in the noise-inverted upscaled latents (DemoFusion skip residual)",
    "local_path": "the local path (MultiDiffusion windows)",
    "renormalize": "rescale each upscaling phase's latents to phase 1's mean and std (DemoFusion)",
    "scheduler": "scheduler; 'default' keeps the model's own",
    "prompt_decomposer": "patch prompt stage (see `accdiffusion plugins`)",
    "tiler": "local window tiler stage",
    "global_guidance": "global path stage; 'none' switches it off",
    "upscaler": "latent upscaler stage",
    "schedule": "steps and start timestep of each upscaling phase: 'paper' (default) or 'fast'",
    "structure_guidance": "extra conditioning of the local windows: 'none' or 'controlnet' (AccDiffusion v2)",
    "lora": "PATH[:SCALE]: load LoRA weights (file, folder or hub id) with this scale (default 1.0); repeatable",
    "attention_factor": "read cross-attention at 1/this of the latent side",
    "attention_strength": "with --image: share of the schedule re-noised to read attention maps",
    "dtype": "model precision",
    "device": "torch device, e.g. cpu, cuda, cuda:1, mps; auto picks cuda, then mps, then cpu",
    "offload": "CPU offload of model components (needs accelerate)",
    "save_stages": "also save the image of every phase",
    "max_phases": "refuse runs with more phases than this (checked before the model loads)",
    "max_unet_evaluations": "refuse runs needing more UNet evaluations than this (see --dry-run)",
    "max_memory_gb": "refuse runs whose peak-memory estimate exceeds this many GiB (default: the device's free memory)",
}

#: Settings a registered model may recommend values for (shown in ``--help``).
_MODEL_TUNABLE = {"steps", "guidance_scale", "multi_guidance_scale", "scale", "stride", "view_batch_size",
                  "scheduler", "negative_prompt"}

_CHOICES = {"scheduler": SCHEDULERS, "dtype": DTYPES, "offload": OFFLOAD}


def _kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` except where the help text explains a missing default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default == [] or isinstance(action, argparse._StoreTrueAction):
            return action.help or ""
        return super()._get_help_string(action)


#: ``dest`` prefix of the flags derived from the plugins' declared options.
_OPTION_DEST = "plugin_option:"


def _add_plugin_option_flags(gen: argparse.ArgumentParser, host: Any) -> None:
    """One flag per declared option of every installed plugin (``--NAME-FIELD``)
    and one per alias (``--c``), in an argument group per stage."""
    from .errors import PluginError
    from .plugins import option_flags

    group = gen.add_argument_group("plugin options", "options the installed stage plugins declare "
                                   "(`accdiffusion plugins --options`); an option of a plugin that is not "
                                   "selected is refused")
    for flag, key, targets in option_flags(host.registry):
        reg, opt = targets[0]
        if len(targets) == 1 and key == f"{reg.name}.{opt.name}":
            text = f"{opt.spec.help} ({reg.stage} {reg.name!r}: {opt.spec.allowed()}; default: {opt.default})"
        else:
            named = ", ".join(f"{r.name}.{o.name}" for r, o in targets)
            text = f"{opt.spec.help}: sets {named}, whichever is selected ({opt.spec.allowed()})"
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text.replace("%", "%%"),
                                  "dest": _OPTION_DEST + key}
        if all(o.spec.type is bool for _, o in targets):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = opt.spec.type.__name__.upper() if opt.spec.choices is None else \
                "{" + ",".join(map(str, opt.spec.choices)) + "}"
        try:
            group.add_argument(flag, **kwargs)
        except argparse.ArgumentError as exc:
            raise PluginError(f"{reg.source()}: the flag {flag} of option {key} clashes with another flag: "
                              f"{exc}") from None


def _plugin_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run's plugin options: ``--option KEY=VALUE`` entries and the derived flags given."""
    out: dict[str, Any] = dict(getattr(args, "option", []) or [])
    for dest, value in vars(args).items():
        if dest.startswith(_OPTION_DEST):
            key = dest[len(_OPTION_DEST):]
            if key in out:
                from .errors import SettingsError

                raise SettingsError(f"option {key} is given twice (as a flag and with --option); give it once")
            out[key] = value
    return out


def build_parser(host: Any = None) -> argparse.ArgumentParser:
    """The command line's parser; the plugin-option flags come from ``host``
    (a fresh :class:`~accdiffusion.plugins.PluginHost` when not given)."""
    if host is None:
        from .plugins import PluginHost

        host = PluginHost()
    parser = argparse.ArgumentParser(
        prog="accdiffusion",
        description="Training-free higher-resolution image generation: AccDiffusion on DemoFusion.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = _HelpFormatter
    gen = sub.add_parser("generate", help="generate one image", formatter_class=fmt,
                         description="Generate one image at a multiple of the model's native size.")
    gen.add_argument("prompt", help="the text prompt (may be empty)")
    gen.add_argument("--model", default=None,
                     help="registered model name, diffusers folder, single-file checkpoint or hub id "
                          "(default: the installed 'shapes' model)")
    gen.add_argument("--model-config", default=None,
                     help="for a single-file checkpoint: a diffusers folder or hub id with its configs")
    gen.add_argument("--image", default=None, help="upscale this image instead of generating phase 1")
    gen.add_argument("--output", "-o", default="outputs", help="output folder; each run writes a subfolder")
    gen.add_argument("--name", default=None, help="run subfolder name (default: time and seed)")
    gen.add_argument("--no-pictures", action="store_true", help="skip attention-map and patch-prompt pictures")
    gen.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    gen.add_argument("--dry-run", action="store_true",
                     help="print the run's phases, windows, UNet evaluations and memory estimate, then stop "
                          "(reads the model's configs, loads no weights)")
    gen.add_argument("--option", action="append", type=_kv, default=[], metavar="KEY=VALUE",
                     help="a plugin option as NAME.FIELD=VALUE, or an alias such as c=0.4 (repeatable; "
                          "`accdiffusion plugins --options` lists them)")
    for f in attrs.fields(Settings):
        if f.name in ("prompt", "plugin_options"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = _DEFAULTS.get(f.name)
        text = _HELP.get(f.name, f.name)
        if default is not None:
            text += f" (default: {default}"
            text += "; a registered model may recommend another)" if f.name in _MODEL_TUNABLE else ")"
        # SUPPRESS: only flags the user gives reach the settings, so model recommendations can apply
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif f.name == "lora":
            kwargs.update(action="append", metavar="PATH[:SCALE]", help=_HELP["lora"])
        elif f.name in _CHOICES:
            kwargs["choices"] = _CHOICES[f.name]
        elif f.name == "max_memory_gb":
            kwargs["type"] = float
        elif f.name in ("height", "width", "seed", "stride") or isinstance(default, int):
            kwargs["type"] = int
        elif isinstance(default, float):
            kwargs["type"] = float
        gen.add_argument(flag, **kwargs)
    _add_plugin_option_flags(gen, host)
    plugins = sub.add_parser("plugins", help="list installed stage plugins and models", formatter_class=fmt)
    plugins.add_argument("--options", action="store_true",
                         help="also list every plugin's options: flag, type, allowed values, default, help")
    bat = sub.add_parser("batch", help="generate one image per line of a prompts file", formatter_class=fmt,
                         description="One run folder per line of PROMPTS_FILE (JSON lines with per-prompt "
                                     "settings, or plain text: one prompt per line) and batch-summary.json. "
                                     "Settings flags apply to every line; a line's own settings win.")
    bat.add_argument("prompts_file", help="JSON-lines (.jsonl) or text file of prompts")
    bat.add_argument("--ray", default=None, metavar="ADDRESS",
                     help="run the lines as Ray tasks, one worker per GPU or CPU slot: 'local' starts Ray "
                          "here, HOST:PORT or ray://HOST:PORT joins a cluster (needs accdiffusion-core[ray])")
    settings_dests = {f.name for f in attrs.fields(Settings)}
    for action in gen._actions:  # the settings flags and the model and output flags of generate
        if action.option_strings and (action.dest in settings_dests or action.dest.startswith(_OPTION_DEST)) \
                or action.dest in ("model", "model_config", "output", "no_pictures", "quiet", "option"):
            bat._add_action(action)
    ui = sub.add_parser("ui", help="serve a web page for generating (needs accdiffusion-core[ui])", formatter_class=fmt,
                        description="Load the model once and serve a Gradio page: the fields of a run, each "
                                    "phase's progress and image, the pictures and the record; one generation at a "
                                    "time, further requests queue. Also an API endpoint named 'generate'.")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on")
    ui.add_argument("--port", type=int, default=7860, help="port to listen on")
    ui.add_argument("--model", default=None, help="registered model name, diffusers folder, single-file checkpoint "
                                                  "or hub id (default: the installed 'shapes' model)")
    ui.add_argument("--output", "-o", default="outputs", help="output folder; each run writes a subfolder")
    ui.add_argument("--device", default=None, help="torch device (default: the model's or auto)")
    ui.add_argument("--dtype", default=None, choices=DTYPES, help="model precision (default: the model's or float32)")
    return parser


#: Progress bars this process opened, closed before an interrupt's message.
_BARS: list = []


def _progress(quiet: bool):
    if quiet:
        return None
    from tqdm.auto import tqdm

    def factory(desc: str, total: int):
        bar = tqdm(total=total, desc=desc, unit="step", leave=True, file=sys.stderr)
        _BARS.append(bar)
        return bar

    return factory


def _close_progress_bars() -> None:
    """Close every open progress bar (ours and the libraries'), so that a
    message printed next starts on its own line."""
    bars = list(_BARS)
    _BARS.clear()
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is not None:
        bars += list(getattr(tqdm_std.tqdm, "_instances", ()))
    for bar in bars:
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - best effort while exiting
            pass


_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


@contextlib.contextmanager
def _quiet_libraries(quiet: bool) -> Iterator[None]:
    """With ``quiet``: no diffusers/transformers log messages or loading bars
    and no Python warnings while the run lasts; restored afterwards."""
    if not quiet:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    for k, v in _QUIET_ENV.items():
        os.environ[k] = v
    restore = []
    for name in ("diffusers", "transformers"):
        try:
            logging = __import__(f"{name}.utils.logging", fromlist=["logging"])
        except Exception:  # noqa: BLE001 - a library that is missing or broken stays as it is
            continue
        level = logging.get_verbosity()
        bars = logging.is_progress_bar_enabled() if hasattr(logging, "is_progress_bar_enabled") else True
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        restore.append((logging, level, bars))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logging, level, bars in restore:
            logging.set_verbosity(level)
            if bars:
                logging.enable_progress_bar()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@attrs.frozen
class _ProcessGroup:
    context: Any
    factory: Any


@contextlib.contextmanager
def _process_group(device: str) -> Iterator[Optional[_ProcessGroup]]:
    """With ``WORLD_SIZE`` > 1 in the environment (``torchrun``): join the
    process group and yield the distributed executor factory; else ``None``.
    The group is left when the run ends, also after an error (with gloo), so
    that the other ranks see this one gone and fail instead of waiting."""
    if os.environ.get("WORLD_SIZE", "1").strip() in ("", "1"):
        yield None
        return
    import torch.distributed as dist

    from .distributed import DistributedExecutorFactory, close_distributed, init_distributed, world_size_from_env

    if world_size_from_env() == 1:
        yield None
        return
    joined = not dist.is_initialized()
    context = init_distributed(device)
    try:
        yield _ProcessGroup(context, DistributedExecutorFactory())
    except BaseException:
        if joined and context.backend == "gloo":  # NCCL's watchdog ends a broken group itself
            close_distributed()
        raise
    if joined:
        close_distributed()


def cmd_dry_run(args: argparse.Namespace) -> int:
    """Print what the run would cost (phases, windows, UNet evaluations, memory) and stop."""
    with _quiet_libraries(True):
        from .api import estimate_run
        from .preflight import check

        options = {f.name: getattr(args, f.name) for f in attrs.fields(Settings)
                   if f.name not in ("prompt", "plugin_options") and hasattr(args, f.name)}
        options["plugin_options"] = _plugin_options(args)
        est = estimate_run(args.prompt, model=args.model, **options)
    print("\n".join(est.lines()))
    check(est, Settings(prompt=args.prompt, **{k: v for k, v in options.items()
                                               if k in ("max_phases", "max_unet_evaluations", "max_memory_gb")}))
    print("within the limits: the run would start")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .output import check_output_dir, check_run_name

    # everything about the output is checked before the model loads
    if args.name is not None:
        check_run_name(args.name)
    check_output_dir(args.output)
    if args.dry_run:
        return cmd_dry_run(args)
    with _quiet_libraries(args.quiet), _process_group(getattr(args, "device", "auto")) as group:
        from .api import generate
        from .output import write_run
        from .plugins import PluginHost

        options = {f.name: getattr(args, f.name) for f in attrs.fields(Settings)
                   if f.name not in ("prompt", "plugin_options") and hasattr(args, f.name)}
        options["plugin_options"] = _plugin_options(args)
        main_rank = group is None or group.context.is_main
        if group is not None and group.context.device.startswith("cuda"):
            options["device"] = group.context.device  # each rank on its own GPU
        host = PluginHost()
        result = generate(args.prompt, model=args.model, model_config=args.model_config, image=args.image,
                          host=host, progress=_progress(args.quiet or not main_rank),
                          executor=None if group is None else group.factory, **options)
        if group is not None:
            result = attrs.evolve(result, record={**result.record, "distributed": group.factory.summary()})
        if not main_rank:  # rank 0 alone writes the run folder and prints
            return 0
        name = args.name or time.strftime("%Y%m%d-%H%M%S") + f"-seed{result.seed}"
        folder = write_run(result, args.output, name, attention_pictures=not args.no_pictures)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(folder / "image.png")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """``accdiffusion batch``: every line checked first, then run; returns 0
    when every line made an image, 3 when some were refused or failed."""
    from .output import check_output_dir

    check_output_dir(args.output)
    with _quiet_libraries(True):
        from .api import DEFAULT_MODEL, resolve_model
        from .batch import SUMMARY, check_lines, parse_prompts, run_batch
        from .loading import inspect_folder
        from .plugins import PluginHost

        if args.ray is not None:
            from .batch import check_ray_address

            check_ray_address(args.ray)
        host = PluginHost()
        options = {f.name: getattr(args, f.name) for f in attrs.fields(Settings)
                   if f.name not in ("prompt", "plugin_options") and hasattr(args, f.name)}
        if _plugin_options(args):
            options["plugin_options"] = _plugin_options(args)
        model_name = DEFAULT_MODEL if args.model is None else args.model
        defaults = host.model_defaults(model_name)
        base = {**defaults, **options}
        Settings(prompt="", **base)  # the command line's own values, before any line
        location = resolve_model(args.model, host)
        lines = check_lines(parse_prompts(args.prompts_file), base, host, inspect_folder(location, host.families()))
        for line in lines:
            if line.error is not None:
                print(f"accdiffusion: {args.prompts_file}:{line.number}: skipped: {line.error}", file=sys.stderr)

        def progress(total: int) -> Any:
            if args.quiet:
                return None
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="batch", unit="prompt", file=sys.stderr)
            _BARS.append(bar)
            return bar

        summary = run_batch(lines, base, args.output, location=location,
                            model={"name": model_name, "location": location, "defaults": defaults},
                            prompts_file=str(args.prompts_file), model_config=args.model_config,
                            pictures=not args.no_pictures, ray_address=args.ray, progress=progress)
    for entry in summary["results"]:
        if entry["status"] == "failed":
            print(f"accdiffusion: {args.prompts_file}:{entry['line']}: failed: {entry['error']}", file=sys.stderr)
    print(f"{summary['ok']} of {summary['lines']} lines made an image ({summary['failed']} failed, "
          f"{summary['invalid']} skipped); summary: {os.path.join(args.output, SUMMARY)}")
    return 0 if summary["ok"] == summary["lines"] else 3


def cmd_ui(args: argparse.Namespace) -> int:
    """``accdiffusion ui``: serve the web page until interrupted."""
    from .errors import SettingsError
    from .output import check_output_dir

    check_output_dir(args.output)
    if not 0 < args.port < 65536:
        raise SettingsError(f"port={args.port} is not allowed: an integer in [1, 65535]")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SettingsError("accdiffusion ui needs gradio: pip install 'accdiffusion-core[ui]'") from None
    with _quiet_libraries(True):
        from .ui import serve

        serve(host=args.host, port=args.port, model=args.model, output=args.output, device=args.device,
              dtype=args.dtype)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import NO_GLOBAL_GUIDANCE, PluginHost
    from .stages import STAGES

    host = PluginHost()
    for stage in STAGES:
        default = _DEFAULTS[stage]
        print(f"{stage}:")
        for reg in host.registry.registrations(stage):
            mark = "*" if reg.name == default else " "
            print(f"  {mark} {reg.name:<22} {reg.description}  [{reg.plugin}]")
        if stage == "global_guidance":
            print(f"    {NO_GLOBAL_GUIDANCE:<22} switch the global path off (MultiDiffusion with skip residual)")
    print("models:")
    for name, reg in sorted(host.registry.models.items()):
        extra = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in sorted(reg.defaults.items()))
        print(f"    {name:<22} {reg.description or reg.target}{f' (recommends {extra})' if extra else ''}"
              f"  [{reg.plugin}]")
    print("model families (asked in this order):")
    for family in host.families():
        reg = next(r for r in host.registry.family_registrations() if r.target is family)
        print(f"    {family.name:<22} {family.description} ({', '.join(family.pipelines)})  [{reg.plugin}]")
    print("(* = default)")
    if getattr(args, "options", False):
        print()
        print(options_listing(host))
    return 0


def options_listing(host: Any) -> str:
    """Every installed plugin's options as text: per stage name, each option's
    flag, ``--option`` key, type and allowed values, default, aliases and help."""
    from .options import flag_name

    lines = ["options (set with the flag, --option NAME.FIELD=VALUE, or plugin_options={'NAME.FIELD': value}):"]
    for reg in host.registry.all_stages():
        if not reg.declared:
            continue
        lines.append(f"  {reg.stage} {reg.name}  [{reg.distribution}]")
        for opt in reg.declared:
            aliases = "".join(f", --{a.replace('_', '-')}" for a in opt.spec.aliases
                              if f"--{a.replace('_', '-')}" != flag_name(reg.name, opt.name))
            lines.append(f"    {flag_name(reg.name, opt.name)}{aliases}  ({reg.name}.{opt.name}) "
                         f"{opt.spec.allowed()}; default {opt.default!r}")
            lines.append(f"        {opt.spec.help}")
    return "\n".join(lines)


#: Set when this process received SIGINT (see :func:`main`).
_INTERRUPTED: list[bool] = []


def _on_sigint(signum: int, frame: Any) -> None:
    """Remember the interrupt, then raise ``KeyboardInterrupt`` as Python does."""
    _INTERRUPTED.append(True)
    raise KeyboardInterrupt


def _interrupted() -> int:
    """Say so and return 130. After a real SIGINT the process ends here at
    once (``os._exit``): an interrupt inside a library's import can leave a
    half-initialised module whose clean-up at shutdown raises again."""
    _close_progress_bars()
    print("\naccdiffusion: interrupted", file=sys.stderr)
    if _INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 out of
    memory or a failed process group, 2 a bad value, 130 interrupted).

    An interrupt that lands inside a library's import can surface as another
    exception (an ``ImportError`` from a half-initialised extension module);
    after a SIGINT any error counts as the interrupt."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:
        try:
            signal.signal(signal.SIGINT, _on_sigint)
        except ValueError:  # not the main thread: keep Python's handler
            previous = None
    try:
        return _main(argv)
    finally:
        if previous is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous)


def _main(argv: Optional[Sequence[str]]) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "batch":
            return cmd_batch(args)
        if args.command == "ui":
            return cmd_ui(args)
        return cmd_plugins(args)
    except KeyboardInterrupt:
        return _interrupted()
    except (ResourceError, DistributedError) as exc:
        if _INTERRUPTED:
            return _interrupted()
        _close_progress_bars()
        print(f"accdiffusion: error: {exc}", file=sys.stderr)
        return 1
    except AccDiffusionError as exc:
        if _INTERRUPTED:
            return _interrupted()
        _close_progress_bars()
        print(f"accdiffusion: error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        if _INTERRUPTED:
            return _interrupted()
        raise


if __name__ == "__main__":
    raise SystemExit(main())
