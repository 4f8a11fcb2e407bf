"""`mc serve`: the OpenAI-compatible server (policy in mcruntime.serve; this only parses)."""

from __future__ import annotations

import click

from cli import options
from cli.main import WINDOW_MAX, cli
from cli.options import storage_options_option, tree_argument, tree_url
from cli.run_cmds import gistnet_option, model_option, reader_option, window_option

CONFIG = "mcruntime.serve.config:ServeConfig"


def _lib(*decls, field: str, **kw):
    """An option whose default is ServeConfig's (None when not given: the config applies it)."""
    return options.library_option(*decls, default_from=f"{CONFIG}.{field}", apply=False, **kw)


@cli.command()
@click.argument("root")
@_lib("--host", field="host", help="Address to listen on.")
@_lib("--port", field="port", type=click.IntRange(0, 65535))
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File whose first line is the bearer API key clients must send.",
)
@options.library_option(
    "--api-key-env",
    default_from="mcruntime.serve.auth:KEY_ENV",
    metavar="NAME",
    help="Environment variable holding the key when no file is given.",
)
@_lib(
    "--concurrency",
    field="concurrency",
    type=click.IntRange(1, 256),
    help="Memories answered in parallel; one memory is always one request at a time.",
)
@_lib(
    "--max-tokens",
    field="max_tokens",
    type=click.IntRange(1, WINDOW_MAX),
    help="Largest max_tokens a request may ask for.",
)
@_lib(
    "--max-request-bytes",
    field="max_request_bytes",
    type=click.IntRange(1024),
    help="Largest request body; larger ones get 413.",
)
@_lib(
    "--default-memory",
    field="default_memory",
    metavar="NAME",
    help="Memory of requests that name none (no X-Memory header, no user field).",
)
@_lib(
    "--create/--no-create",
    field="create",
    help="Create the tree of an unknown memory on its first chat or document, or answer 404.",
)
@_lib(
    "--max-memories",
    field="max_memories",
    type=click.IntRange(1),
    metavar="N",
    show_default=False,
    help="Most memories ROOT may hold (default: no limit); a request that would create one "
    "more gets 403.",
)
@model_option
@gistnet_option
@window_option
@reader_option
@storage_options_option
def serve(
    root, host, port, api_key_file, api_key_env, concurrency, max_tokens, max_request_bytes,
    default_memory, create, max_memories, model, gistnet, window, reader, storage_options,
):  # fmt: skip
    """Serve the OpenAI chat API over the memories in ROOT (a folder or URL, one tree per
    memory: ROOT/NAME.mc).

    A request's memory is its X-Memory header, else its `user` field, else --default-memory;
    its tree is created on the first chat. Binding to anything but loopback requires an API
    key (--api-key-file or the variable --api-key-env names). Ctrl-C stops it after the
    requests in flight.
    """
    from mcruntime.serve import Memories, ServeConfig, create_app, load_api_key, serve
    from mcruntime.serve.runner import bind

    given = {
        "host": host,
        "port": port,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "max_request_bytes": max_request_bytes,
        "default_memory": default_memory,
        "create": create,
        "max_memories": max_memories,
        "model": model,
        "gistnet": gistnet,
        "window": window,
        "reader": reader,
    }
    config = ServeConfig(
        root=tree_url(root),
        storage_options=storage_options,
        api_key=load_api_key(api_key_file, api_key_env),
        **{k: v for k, v in given.items() if v is not None},
    )
    memories = Memories(config)
    app = create_app(config, memories)  # refuses a non-loopback host without a key
    bind(config.host, config.port).close()  # a taken port: one line, before the model loads
    memories.load()  # before listening: a bad model fails here, with one line
    auth = "API key required" if config.api_key else "no API key (loopback only)"
    click.echo(
        f"mc serve: {root} at http://{config.host}:{config.port}/v1 with {memories.base.name} "
        f"(answers: {memories.reader_name}); "
        f"{auth}; Ctrl-C to stop",
        err=True,
    )
    serve(app, config.host, config.port)


@cli.command()
@click.argument("root")
@_lib(
    "--create/--no-create",
    field="create",
    help="Create the tree of an unknown memory when a tool first writes to it.",
)
@model_option
@gistnet_option
@window_option
@reader_option
@storage_options_option
def mcp(root, create, model, gistnet, window, reader, storage_options):
    """Offer the memories in ROOT to an agent as Model Context Protocol tools over stdio
    (remember, ask, search, list_documents, list_memories): one tree per memory, ROOT/NAME.mc,
    as `mc serve`. Logs go to stderr; stdout carries the protocol."""
    from mcruntime.serve import ServeConfig
    from mcruntime.serve.mcp_tools import build

    given = {"create": create, "model": model, "gistnet": gistnet, "window": window,
             "reader": reader}  # fmt: skip
    config = ServeConfig(
        root=tree_url(root),
        storage_options=storage_options,
        **{k: v for k, v in given.items() if v is not None},
    )
    server, memories = build(config)
    memories.load()  # a bad model fails here, with one line, before the protocol starts
    click.echo(
        f"mc mcp: {root} with {memories.base.name} (answers: {memories.reader_name}) on stdio",
        err=True,
    )
    try:
        server.run("stdio")
    finally:
        memories.close()


@cli.command()
@tree_argument()
@click.option("--port", default=0, type=click.IntRange(0, 65535), show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")  # fmt: skip
@model_option
@gistnet_option
@window_option
@reader_option
@storage_options_option
def explore(tree, port, model, gistnet, window, reader, storage_options):
    """Open the web explorer of TREE (a NAME.mc folder or URL) on 127.0.0.1 and print its
    address: the tree's levels, segments, text, search, answers and history in a browser.
    Loopback only, no key; Ctrl-C to stop. `mc serve ROOT` shows every memory of ROOT."""
    from mcruntime.serve import Memories, create_app, serve
    from mcruntime.serve.explorer import one_tree
    from mcruntime.serve.runner import bind

    given = {"model": model, "gistnet": gistnet, "window": window, "reader": reader}
    config, name = one_tree(tree, storage_options or None,
                            **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    sock = bind(config.host, port)  # port 0: the free port chosen now is the one printed
    config.port = sock.getsockname()[1]
    sock.close()
    memories = Memories(config)
    app = create_app(config, memories)
    memories.load()
    click.echo(f"http://{config.host}:{config.port}/#/m/{name}")  # stdout: for a script
    click.echo(f"mc explore: {tree} with {memories.base.name}; Ctrl-C to stop", err=True)
    serve(app, config.host, config.port)
