"""Entry point of `mc`: the click group, and the one place errors become one line + exit code.

Library errors carry an ``exit_code`` attribute (see mcstore.errors); anything a person can act
on is printed as a single line on stderr. ``--debug`` (or MC_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="megacontext")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """MegaContext: unbounded memory for a frozen LLM through a fixed working window."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug or os.environ.get("MC_DEBUG") == "1"


def _register() -> None:
    # Each command module adds itself to `cli`; the imports are here so `mc --help` lists them.
    from cli import model_cmds, run_cmds, show, store_cmds  # noqa: F401


def _known_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for mod, name in (
        ("mcstore", "StoreError"),
        ("mcmodels", "ModelError"),
        ("mcruntime", "SessionError"),
    ):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(__import__(mod), name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    _register()
    debug = (
        "--debug" in (argv if argv is not None else sys.argv[1:])
        or os.environ.get("MC_DEBUG") == "1"
    )
    try:
        cli.main(args=argv, prog_name="mc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("mc: interrupted; the tree is at its last commit.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("mc: interrupted; the tree is at its last commit.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except _known_errors() as e:
        if debug:
            raise
        click.echo(f"mc: {e}", err=True)
        sys.exit(getattr(e, "exit_code", 1))
    except SystemExit:
        raise
    except Exception as e:  # an unexpected bug: still one line unless --debug
        if debug:
            raise
        click.echo(f"mc: unexpected error: {type(e).__name__}: {e} (rerun with --debug)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
