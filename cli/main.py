"""Entry point of `mc`: the click group, and the one place errors become one line + exit code.

Library errors carry an ``exit_code`` attribute (mcstore.errors, mcruntime.errors,
mcmodels.errors); anything a person can act on is printed as a single ``mc: …`` line on stderr
and the process exits with that code. ``--debug`` (or MC_DEBUG=1) also shows the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import traceback

import click

EXIT_CODES = """\b
Exit codes:
  0  ok                               7  model binding mismatch
  1  other error                      8  no access to the storage
  2  bad argument                     9  tree opened read-only
  3  no tree at that path/URL        10  no such version or tag
  4  a tree or files already there   11  bad input (empty, binary, …)
  5  commit conflict                 12  window too small
  6  corrupt or truncated object     21  no such model or weights
 22  position beyond the model       23  bad checkpoint
 24  corpus problem                 130  interrupted (Ctrl-C)"""

INTERRUPTED = "interrupted; the tree is at its last commit"


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="megacontext")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """MegaContext: unbounded memory for a frozen LLM through a fixed working window.

    TREE is a path or a URL (./notes.mc, s3://bucket/team/notes.mc); credentials and endpoints
    come from the usual AWS/fsspec settings or --storage-option KEY=VALUE.
    """
    ctx.ensure_object(dict)
    # main() passes what it saw anywhere on the line (`mc chat T … --debug` too)
    ctx.obj["debug"] = ctx.obj.get("debug") or debug or os.environ.get("MC_DEBUG") == "1"


def _register() -> None:
    # Each command module adds itself to `cli`; the imports are here so `mc --help` lists them.
    from cli import exchange_cmds, forget_cmds, model_cmds, run_cmds, serve_cmd, show, store_cmds  # noqa: F401


def _known_errors() -> tuple[type[BaseException], ...]:
    # only modules already imported can have raised: importing mcmodels here (torch) would
    # cost seconds on every error of a store command
    errors: list[type[BaseException]] = []
    for mod, name in (
        ("mcstore", "StoreError"),
        ("mcmodels", "ModelError"),
        ("mcruntime", "SessionError"),
    ):
        with contextlib.suppress(AttributeError):
            if mod in sys.modules:
                errors.append(getattr(sys.modules[mod], name))
    return tuple(errors)


class _LineHandler(logging.Handler):
    """Library warnings as `mc: warning: …` lines on stderr (all records with --debug)."""

    def __init__(self, debug: bool):
        super().__init__(logging.DEBUG if debug else logging.WARNING)
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if self.debug:
                line = f"mc: {record.levelname.lower()}: {record.name}: {msg}"
            else:
                line = f"mc: warning: {msg}"
            click.echo(line, err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


_LIBRARIES = ("mcstore", "mcruntime", "mcmodels", "cli", "bench")


@contextlib.contextmanager
def _library_logging(debug: bool):
    """Route the libraries' log records to `_LineHandler` while a command runs, then restore."""
    handler = _LineHandler(debug)
    saved = []
    for name in _LIBRARIES:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate))
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG if debug else logging.WARNING)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate


WINDOW_MAX = 8192  # the largest --window the commands accept


def cli_hint(e: BaseException, tree: str = "TREE") -> str:
    """What to type about a library error: the library says what is wrong in its own terms
    (its messages name no command or option), the CLI adds the command or option that fixes it."""

    def kind(module: str, name: str) -> bool:
        cls = getattr(sys.modules.get(module), name, None)
        return cls is not None and isinstance(e, cls)

    if kind("mcruntime.errors", "WindowError"):
        need = getattr(e, "window_needed", None)
        shorter = getattr(e, "question", None) is not None
        if need is None:
            return "; use a larger --window"
        if need > WINDOW_MAX:
            return f" (a window of {need} would do, but --window goes up to {WINDOW_MAX}" + (
                "; ask a shorter question or lower --max-new-tokens)" if shorter else ")"
            )
        ask = "ask a shorter question, lower --max-new-tokens, or " if shorter else ""
        return f"; {ask}pass --window {need} or more"
    if kind("mcruntime.errors", "StaleGists"):
        return f": run `mc regist {e.url}`, or pass that GistNet with --gistnet PATH"
    if kind("mcstore.errors", "TreeNotFound"):
        new = _tree_path_for_file(tree)
        if new is not None:  # `mc ingest FILE …` would refuse the file's path: name another
            return (
                f"; name a new path (`mc ingest {shlex.quote(new)} {shlex.quote(tree)}` "
                "makes a tree of the file)"
            )
        return f" (`mc ingest {tree} FILES` makes one)"
    if kind("mcstore.errors", "VersionNotFound"):
        return f"; `mc log {tree}` lists the versions, `mc info {tree}` the tags"
    if kind("mcstore.errors", "BindingMismatch"):
        return f"; `mc info {tree}` names it, --model picks it"
    return ""


def _tree_path_for_file(tree: str) -> str | None:
    """When TREE is a local regular file: a path next to it where a tree of it could go
    (``notes.txt`` -> ``notes.mc``, or ``notes-2.mc`` … if taken); else None."""
    if "://" in tree or tree.startswith("memory:") or not os.path.isfile(tree):
        return None
    stem = os.path.splitext(tree)[0]
    for n in range(1, 100):
        new = f"{stem}.mc" if n == 1 else f"{stem}-{n}.mc"
        if not os.path.lexists(new):
            return new
    return None


def _fail(line: str, code: int) -> None:
    line = " ".join(line.split())  # one line, whatever the message held
    click.echo(f"mc: {line}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    _register()
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("MC_DEBUG") == "1"
    obj = {"debug": debug}  # commands add "tree" (the TREE argument) for the error hints
    if "--debug" in args[1:]:  # `mc chat T … --debug`, as the error lines suggest: accept it
        args = [args[0], *(a for a in args[1:] if a != "--debug")]
    try:
        # make_context + invoke rather than cli.main: click's main turns Ctrl-C into an Abort
        # (losing the command's message) and prints a blank line first.
        with _library_logging(debug), cli.make_context("mc", args, obj=obj) as ctx:
            cli.invoke(ctx)
    except click.exceptions.Exit as e:  # --help, --version, ctx.exit(n)
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        said = str(e) if isinstance(e, KeyboardInterrupt) else ""  # the command's own words
        if sys.stderr.isatty() and not said:
            click.echo(err=True)  # end the line the terminal's ^C (or an answer) is on
        _fail(said or INTERRUPTED, 130)
    except click.UsageError as e:  # bad option or argument: one line, with where to look
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _fail(f"{e.format_message()}{where}", e.exit_code)
    except click.ClickException as e:
        _fail(e.format_message(), e.exit_code)
    except BrokenPipeError:  # `mc log TREE | head`: the reader left; not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except _known_errors() as e:
        if debug:
            traceback.print_exc()
        _fail(str(e) + cli_hint(e, obj.get("tree", "TREE")), getattr(e, "exit_code", 1))
    except Exception as e:  # an unexpected bug: still one line unless --debug
        if debug:
            traceback.print_exc()
        again = "" if debug else " (rerun with --debug)"
        _fail(f"unexpected error: {type(e).__name__}: {e}{again}", 1)


if __name__ == "__main__":
    main()
