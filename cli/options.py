"""Options shared by every command that opens a tree."""

from __future__ import annotations

import json
import os
import sys

import click


def _parse_storage_options(ctx, param, values) -> dict:
    out: dict = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not key=value", ctx=ctx, param=param)
        key, raw = item.split("=", 1)
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:  # numbers and nested JSON objects; anything else stays a string
                value = json.loads(raw) if raw[:1] in "{[" else int(raw)
            except ValueError:
                value = raw
        cur = out
        *parents, leaf = key.split(".")  # client_kwargs.endpoint_url=… nests
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = value
    return out


storage_options_option = click.option(
    "--storage-option",
    "-o",
    "storage_options",
    multiple=True,
    callback=_parse_storage_options,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable; dots nest: client_kwargs.endpoint_url=URL).",
)


def version_arg(v: str | None) -> int | str | None:
    """A ``--version`` as the store takes it: a number, or a tag's name."""
    if v is None:
        return None
    return int(v) if v.isdigit() else v


def tree_url(tree: str) -> str:
    """A tree path or URL as the store expects it."""
    return tree


def _existing_tree(ctx, param, value: str) -> str:
    from mcruntime.location import check_existing

    ctx.ensure_object(dict)["tree"] = value  # error hints name the user's tree
    check_existing(value)  # a file where a tree should be: one line, exit 3
    return value


def tree_argument(name: str = "tree"):
    """A TREE argument (path or URL) of a tree that must exist."""
    return click.argument(name, callback=_existing_tree)


def progress_bar(*, enabled: bool | None = None, **kw):
    """A tqdm bar on stderr: on when stderr is a terminal (``enabled=None``), or as asked.

    A terminal that reports a size of 0x0 (some ptys) would make tqdm draw nothing: it gets a
    fixed size instead; so does a bar forced on where stderr is not a terminal.
    """
    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    sizing = {"dynamic_ncols": True} if min(size) > 0 else {"ncols": 100, "nrows": 24}
    return tqdm(file=sys.stderr, disable=None if enabled is None else not enabled, **sizing, **kw)


class LibraryDefault(click.Option):
    """An option whose default is the library's, named ``"module:Name.attr"`` (a constant, or a
    config dataclass field such as ``"mcmodels.train_gist:GistTrainConfig.steps"``) and read
    only when needed: when the command runs or its help is shown, so ``mc --help`` and the
    fast failures stay free of torch, and the CLI never states a default of its own.

    ``apply=False``: the option's value stays None when not given (the library applies its
    default itself, and parsing imports nothing); help still shows the library's value."""

    def __init__(self, decls, *, default_from: str, apply: bool = True, **kw):
        self.default_from = default_from
        self.apply = apply
        kw.setdefault("show_default", True)
        super().__init__(decls, **kw)

    @property
    def show_default(self):
        if self.apply or not self._show:
            return self._show
        return str(self.library_default())

    @show_default.setter
    def show_default(self, value) -> None:
        self._show = value

    def library_default(self):
        import importlib

        module, _, path = self.default_from.partition(":")
        value = importlib.import_module(module)
        for part in path.split("."):
            value = getattr(value, part)
        return value

    def get_default(self, ctx, call: bool = True):
        return self.library_default() if self.apply else None


def library_option(*decls, default_from: str, **kw):
    """``click.option`` with a ``LibraryDefault``."""
    return click.option(*decls, cls=LibraryDefault, default_from=default_from, **kw)


def config_options(config: str, fields: dict[str, dict]):
    """Options for fields of the config dataclass ``"module:Class"``, in the order given: the
    option ``--a-b`` for field ``a_b`` takes its default from the dataclass; ``fields`` maps a
    field to extra ``click.option`` keywords (``type``, ``help``; ``is_flag`` for booleans;
    ``flag`` for another spelling of the option)."""

    def decorate(f):
        for name, extra in reversed(fields.items()):
            extra = dict(extra)
            flag = extra.pop("flag", "--" + name.replace("_", "-"))
            f = library_option(flag, name, default_from=f"{config}.{name}", **extra)(f)
        return f

    return decorate


def _remember_alias(ctx, param, value):
    if value is not None:
        ctx.meta["mc.base_alias"] = value


def _model_or_alias(ctx, param, value):
    """``--model``, or what the older spelling ``--base`` gave when ``--model`` was not given."""
    alias = ctx.meta.get("mc.base_alias")
    given = ctx.get_parameter_source(param.name) != click.core.ParameterSource.DEFAULT
    return value if given or alias is None else alias


def model_option(dest: str = "model"):
    """``--model NAME``: the base model, by default the library's (``mcmodels.DEFAULT_MODEL``)."""
    return library_option(
        "--model",
        dest,
        default_from="mcmodels.defaults:DEFAULT_MODEL",
        metavar="NAME",
        callback=_model_or_alias,
        help="Base model: a name, 'tiny', a Hugging Face folder or a .gguf file.",
    )


def reader_option():
    """``--reader NAME``: who writes the answers (``mcmodels.DEFAULT_READER`` by default)."""
    return library_option(
        "--reader",
        "reader",
        default_from="mcmodels.defaults:DEFAULT_READER",
        metavar="NAME",
        help="Who answers: 'keeper' (the tree's own model reading its window), "
        "'qwen2.5-coder-1.5b-instruct' (./install), 'smollm2-135m-instruct' "
        "(the keeper's weights as a text reader through llama.cpp) or a .gguf file.",
    )


# ``--base``: the older spelling of ``--model`` (the training commands), still accepted
base_alias_option = click.option(
    "--base", default=None, hidden=True, expose_value=False, is_eager=True, callback=_remember_alias
)

drop_tags_option = click.option(
    "--drop-tags", is_flag=True, help="Let --purge drop tags of versions it expires."
)
