"""Meta-tests: the documentation under ``docs/`` matches the code.

They fail when a hook, a setting, a CLI flag, a registered stage or a value
type is added or changed without its documentation, when a link breaks, and
when a hook has no test anywhere in the repository.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import types
from pathlib import Path

import attrs
import pytest
import torch

import accdiffusion
from accdiffusion import Settings, hookspecs, stages
from accdiffusion import types as value_types
from accdiffusion.cli import _plugin_options, build_parser, options_listing
from accdiffusion.options import option
from accdiffusion.plugins import Registry, StageEntry, StagePlugin, option_flags

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKS_MD = DOCS / "hooks.md"
OPTIONS_MD = DOCS / "options.md"
WRITING_MD = DOCS / "writing-plugins.md"

SPEC_MARK = f"{hookspecs.PROJECT}_spec"
HOOKS = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, SPEC_MARK)
)
FIELDS = list(attrs.fields(Settings))


def repo_entry_points() -> set[str]:
    """The entry-point names of this repository's distributions (the plugins the docs describe)."""
    names = set()
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")) + sorted(ROOT.glob("plugins/*/pyproject.toml")):
        m = re.search(r"^\[project\.entry-points\.accdiffusion\]\n((?:[\w-]+ *= *.+\n?)+)",
                      pyproject.read_text(encoding="utf-8"), re.M)
        if m:
            names |= {line.split("=")[0].strip() for line in m.group(1).splitlines() if line.strip()}
    return names


#: The plugins the documentation describes: this repository's entry points and the core's own stages.
REPO_PLUGINS = repo_entry_points() | {"accdiffusion.builtins"}


def repo_host() -> accdiffusion.PluginHost:
    """A plugin host whose stages are this repository's only, so that a plugin
    installed from elsewhere (another stage, another flag) does not change
    what the pages must say."""
    host = accdiffusion.PluginHost()
    registry = Registry()
    for reg in host.registry.all_stages():
        if reg.plugin in REPO_PLUGINS:
            registry.registrar(reg.stage, reg.plugin, reg.distribution)(
                reg.name, reg.target, reg.description, options=None if reg.options is reg.target else reg.options)
    for name, reg in host.registry.models.items():
        if reg.plugin in REPO_PLUGINS:
            registry.registrar("model", reg.plugin, reg.distribution)(name, reg.target, reg.description,
                                                                     defaults=reg.defaults or None)
    host.registry = registry
    return host


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def signature_line(name: str) -> str:
    fn = getattr(hookspecs, name)
    return f"def {name}({', '.join(inspect.signature(fn).parameters)})"


def sections(text: str, level: int) -> dict[str, str]:
    """Heading text (backticks removed) -> the text up to the next heading of that level or higher."""
    out: dict[str, str] = {}
    fences = [m.span() for m in re.finditer(r"^```.*?^```", text, re.S | re.M)]
    pattern = re.compile(rf"^#{{1,{level}}} (.+)$", re.M)
    matches = [m for m in pattern.finditer(text) if not any(a <= m.start() < b for a, b in fences)]
    for k, m in enumerate(matches):
        if not m.group(0).startswith("#" * level + " "):
            continue
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        out[m.group(1).replace("`", "").strip()] = text[m.end():end]
    return out


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


# -- hooks.md ----------------------------------------------------------------


def test_hookspecs_are_found():
    assert "accdiffusion_adapt_pipeline" in HOOKS and len(HOOKS) >= 6


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_with_its_exact_signature(hook):
    body = sections(read(HOOKS_MD), 2).get(hook)
    assert body is not None, f"docs/hooks.md has no '## {hook}' heading"
    lines = [line.strip() for line in body.splitlines()]
    assert signature_line(hook) in lines, f"section {hook} lacks the line {signature_line(hook)!r}"
    assert "@accdiffusion.hookimpl" in body, f"section {hook} has no example implementation"


def test_firstresult_hooks_are_documented_as_such():
    text = read(HOOKS_MD)
    for hook in HOOKS:
        if getattr(getattr(hookspecs, hook), SPEC_MARK).get("firstresult"):
            assert "firstresult" in sections(text, 2)[hook], hook


def test_register_signature_is_documented():
    text = read(HOOKS_MD)
    assert 'register(name, target, description="", options=None)' in text
    assert "StagePlugin" in text and "StageEntry" in text
    assert "accdiffusion.hookspecs.hookimpl" in text or "from accdiffusion.hookspecs import hookimpl" in text


def test_stage_protocols_have_sections():
    subsections = sections(read(HOOKS_MD), 3)
    for proto in list(stages.PROTOCOLS.values()) + [stages.LatentCodec]:
        assert proto.__name__ in subsections, f"docs/hooks.md has no '### {proto.__name__}'"
        for member in (n for n in vars(proto) if not n.startswith("_")):
            assert member in subsections[proto.__name__], f"{proto.__name__}.{member} is not documented"


VALUE_TYPES = [
    obj for _, obj in inspect.getmembers(value_types, inspect.isclass)
    if attrs.has(obj) and obj.__module__ == value_types.__name__
]


@pytest.mark.parametrize("cls", VALUE_TYPES, ids=lambda c: c.__name__)
def test_every_value_type_has_a_section_listing_its_fields(cls):
    body = sections(read(HOOKS_MD), 3).get(cls.__name__)
    assert body is not None, f"docs/hooks.md has no '### {cls.__name__}'"
    for field in attrs.fields(cls):
        assert f"| `{field.name}` |" in body, f"{cls.__name__}.{field.name} is missing from its table"


def test_hook_examples_register_through_a_plugin_host():
    blocks = [b for b in code_blocks(read(HOOKS_MD), "python") if "@accdiffusion.hookimpl" in b]
    assert len(blocks) >= len(HOOKS)
    implemented = set()
    for k, source in enumerate(blocks):
        module = types.ModuleType(f"_docs_hook_example_{k}")
        exec(compile(source, f"docs/hooks.md example {k}", "exec"), module.__dict__)
        host = accdiffusion.PluginHost([module], entry_points=False)
        implemented |= {impl.function.__name__ for hook in HOOKS
                        for impl in getattr(host.pm.hook, hook).get_hookimpls()
                        if impl.plugin is module}
        for stage in stages.STAGES:
            for name in host.registry.names(stage):
                if name != "none":
                    obj = host.create(stage, name, Settings(prompt="a cat"))
                    assert isinstance(obj, stages.PROTOCOLS[stage])
    assert implemented == set(HOOKS)


# -- options.md --------------------------------------------------------------


def cli_flag(field: attrs.Attribute) -> str:
    if field.name == "prompt":
        return "`PROMPT` (positional)"
    if field.name == "plugin_options":
        return "`--option KEY=VALUE`"
    flag = "--" + field.name.replace("_", "-")
    if isinstance(field.default, bool):
        return f"`{flag}/--no-{flag[2:]}`"
    return f"`{flag}`"


def rendered_default(field: attrs.Attribute) -> str:
    value = field.default
    if value is attrs.NOTHING:
        return "(required)"
    if isinstance(value, attrs.Factory):
        value = value.factory()
    if isinstance(value, str):
        return "`" + json.dumps(value) + "`"
    return f"`{value!r}`"


def options_rows() -> dict[str, list[str]]:
    rows = {}
    for line in sections(read(OPTIONS_MD), 2)["Settings"].splitlines():
        m = re.match(r"^\| `(\w+)` \|", line)
        if m:
            rows.setdefault(m.group(1), [c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def generate_parser():
    parser = build_parser(repo_host())
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["generate"]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_every_setting_is_in_the_options_table(field):
    row = options_rows().get(field.name)
    assert row is not None, f"docs/options.md has no table row for `{field.name}`"
    assert len(row) == 6, row
    assert row[1] == cli_flag(field)
    assert row[2] == rendered_default(field)
    assert row[3] and row[4] and row[5]


@pytest.mark.parametrize("field", [f for f in FIELDS if f.name not in ("prompt", "plugin_options")],
                         ids=lambda f: f.name)
def test_documented_flags_exist(field):
    options = {s for a in generate_parser()._actions for s in a.option_strings}
    for flag in cli_flag(field).strip("`").split("/"):
        assert flag in options, f"{flag} is not a flag of `accdiffusion generate`"


def test_cli_only_flags_are_documented():
    settings_flags = {"--" + f.name.replace("_", "-") for f in FIELDS}
    settings_flags |= {"--no-" + f.name.replace("_", "-") for f in FIELDS}
    text = read(OPTIONS_MD)
    for action in generate_parser()._actions:
        if action.dest.startswith("plugin_option:"):
            continue  # derived from a plugin's declared options: see the plugin options tests
        for flag in action.option_strings:
            if flag not in settings_flags and flag not in ("-h", "--help"):
                assert f"`{flag}" in text, f"{flag} is not documented in docs/options.md"


def plugin_options_section() -> str:
    return sections(read(OPTIONS_MD), 2)["Plugin options"]


def test_every_derived_flag_is_documented():
    """Every flag derived from a plugin's declared options (``--NAME-FIELD``
    and the alias flags) is in the plugin options section; the ``--no-`` form
    of a boolean follows the rule the section states."""
    actions = [a for a in generate_parser()._actions if a.dest.startswith("plugin_option:")]
    assert {a.option_strings[0] for a in actions} == {flag for flag, _, _ in option_flags(repo_host().registry)}
    body = plugin_options_section()
    assert "`--NAME-FIELD/--no-NAME-FIELD`" in body
    for action in actions:
        flag = action.option_strings[0]
        assert re.search(rf"{re.escape(flag)}(?![\w-])", body), \
            f"{flag} is not documented in docs/options.md's plugin options"


def test_plugin_options_listing_matches_the_installed_plugins():
    """The listing on the page is what `accdiffusion plugins --options` prints
    for this repository's plugins: a new option, default or help shows here."""
    expected = options_listing(repo_host())
    body = sections(plugin_options_section(), 3)["The installed plugins' options"]
    blocks = code_blocks(body, "text")
    assert blocks, "docs/options.md's plugin options have no ```text listing"
    assert blocks[0].rstrip("\n") == expected, (
        "docs/options.md's listing is stale; replace it with the output of `accdiffusion plugins --options` "
        "from its 'options (' line:\n" + expected)


def alias_rows(registry) -> list[str]:
    rows = []
    for alias, targets in sorted(registry.aliases().items()):
        flag = "--" + alias.replace("_", "-")
        if all(o.spec.type is bool for _, o in targets):
            flag += f"/--no-{flag[2:]}"
        rows.append(f"| `{alias}` | `{flag}` | " + ", ".join(f"`{r.name}.{o.name}`" for r, o in targets) + " |")
    return rows


def test_every_alias_has_its_row():
    body = sections(plugin_options_section(), 3)["Aliases: the old spellings"]
    documented = [line.strip() for line in body.splitlines() if re.match(r"^\| `\w+` \| `--", line)]
    assert documented == alias_rows(repo_host().registry), \
        "the alias table of docs/options.md should read:\n" + "\n".join(alias_rows(repo_host().registry))


def test_settings_that_became_plugin_options_are_aliases():
    """The stage knobs that left Settings keep their old spellings as aliases."""
    old = {"c", "sigma", "cosine_scale_3", "gaussian_smoothing", "jitter", "controlnet", "control_image",
           "canny_sigma", "controlnet_scale", "controlnet_start", "controlnet_end"}
    assert not old & {f.name for f in FIELDS}
    assert old <= set(repo_host().registry.aliases())


def test_options_table_lists_only_settings():
    names = {f.name for f in FIELDS}
    assert set(options_rows()) - names == set()


def check_command_lines(text: str, host: accdiffusion.PluginHost) -> int:
    """Parse every `accdiffusion generate` line of the ```sh blocks of
    ``text``; build its Settings and check its plugin options against the
    stages it selects. Returns how many there were."""
    parser = build_parser(host)
    commands = 0
    for block in code_blocks(text, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "accdiffusion" in words and words[words.index("accdiffusion") + 1:][:1] == ["generate"]:
                args = parser.parse_args(words[words.index("accdiffusion") + 1:])
                settings = Settings(prompt=args.prompt, plugin_options=_plugin_options(args),
                                    **{f.name: getattr(args, f.name) for f in FIELDS
                                       if f.name not in ("prompt", "plugin_options") and hasattr(args, f.name)})
                host.check_options(settings, {stage: getattr(settings, stage) for stage in stages.STAGES})
                commands += 1
    return commands


def test_documented_command_lines_parse():
    assert check_command_lines(read(OPTIONS_MD), repo_host()) > 0


# -- plugin pages ------------------------------------------------------------


def registered():
    host = repo_host()
    return [(stage, reg) for stage in stages.STAGES for reg in host.registry.registrations(stage)
            if reg.name != "none"]


@pytest.mark.parametrize("stage, reg", registered(), ids=lambda x: getattr(x, "name", x))
def test_every_registered_stage_has_a_page(stage, reg):
    page = DOCS / "plugins" / f"{reg.name}.md"
    assert page.is_file(), f"{stage} {reg.name!r} (plugin {reg.plugin!r}) has no docs/plugins/{reg.name}.md"
    owner = getattr(reg.target, "__self__", None)
    if isinstance(owner, type):
        assert owner.__name__ in read(page), f"{page.name} does not name the class {owner.__name__}"


def test_the_installed_default_stages_are_found():
    names = {reg.name for _, reg in registered()}
    assert {"cross_attention", "sliding_window", "window_interaction", "bicubic_latent"} <= names


# -- hooks are exercised by tests --------------------------------------------


def _test_files() -> list[Path]:
    files = list((ROOT / "tests").rglob("test_*.py"))
    for group in ("packages", "plugins"):
        files += list((ROOT / group).glob("*/tests/**/test_*.py"))
    return files


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_or_called_by_a_test(hook):
    pattern = re.compile(rf"(def {hook}\(|\.{hook}\()")
    users = [p for p in _test_files() if pattern.search(read(p))]
    assert users, f"no test implements or calls {hook}"


@attrs.frozen
class _Nearest:
    """An upscaler with one declared option."""

    mode: str = option("nearest", choices=("nearest", "nearest-exact"), help="interpolation mode")

    def upscale(self, latents, size, codec):
        return torch.nn.functional.interpolate(latents, size=tuple(size), mode=self.mode)


def test_a_registration_list_builds_the_stage_with_its_options():
    plugin = StagePlugin([StageEntry("upscaler", "nearest_test", _Nearest, "nearest-neighbour latents")])
    host = accdiffusion.PluginHost([plugin], entry_points=False)
    assert host.registry.names("upscaler") == ["nearest_test"]
    reg = host.registry.registrations("upscaler")[0]
    calls = []  # the list implements the upscaler registration hook: one register call per line
    plugin.accdiffusion_register_upscalers(lambda *args, **kwargs: calls.append((args, kwargs)))
    assert calls == [(("nearest_test", _Nearest, "nearest-neighbour latents"), {"options": None})]
    assert reg.description == "nearest-neighbour latents" and reg.options is _Nearest
    upscaler = host.create("upscaler", "nearest_test",
                           Settings(prompt="x", plugin_options={"nearest_test.mode": "nearest-exact"}))
    assert isinstance(upscaler, accdiffusion.Upscaler) and upscaler == _Nearest(mode="nearest-exact")
    latents = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert torch.equal(upscaler.upscale(latents, (4, 4), None),
                       latents.repeat_interleave(2, 2).repeat_interleave(2, 3))
    with pytest.raises(accdiffusion.SettingsError, match="nearest_test.mode.*one of nearest, nearest-exact"):
        host.create("upscaler", "nearest_test", Settings(prompt="x", plugin_options={"nearest_test.mode": "cubic"}))


# -- links -------------------------------------------------------------------


def markdown_files() -> list[Path]:
    files = sorted(DOCS.rglob("*.md"))
    if (ROOT / "README.md").is_file():
        files.append(ROOT / "README.md")
    return files


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", read(path), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path):
    text = re.sub(r"^```.*?^```", "", read(path), flags=re.S | re.M)
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        assert dest.exists(), f"{path.relative_to(ROOT)}: link {target!r} points to a missing file"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{path.relative_to(ROOT)}: no heading for #{anchor} in {dest.name}"


def test_docs_have_the_expected_pages():
    for page in ("hooks.md", "options.md", "writing-plugins.md"):
        assert (DOCS / page).is_file()
