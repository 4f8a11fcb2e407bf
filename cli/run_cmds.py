"""`mc ingest`, `mc chat`, `mc show`, `mc demo`: the commands that need a model."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time

import click

from cli import options
from cli.main import WINDOW_MAX, cli
from cli.options import progress_bar, storage_options_option, tree_argument
from mcruntime.ingest import CHUNK_TOKENS
from mcruntime.retrieval import Keys
from mcstore.entry import DEFAULT_EPOCH


def _session(
    tree: str,
    storage_options: dict,
    *,
    model: str,
    window: int | None,
    mode: str = "a",
    gistnet: str | None = None,
    reader: str = "keeper",
    **kw,
):
    """A session; ``reader`` (chat, demo: the --reader option) says who answers, and ingest
    keeps the keeper (nothing is answered, nothing else is loaded)."""
    from mcmodels.readers import falls_back
    from mcruntime import Session, SessionConfig

    cfg = SessionConfig(**{k: v for k, v in kw.items() if v is not None})
    if falls_back(reader):
        click.echo(
            "mc: answering with the tree's own 135M model; `./install` adds a reader "
            "that answers right far more often",
            err=True,
        )
    return Session(
        tree,
        model=model,
        gistnet=gistnet,
        window=window,
        storage_options=storage_options,
        config=cfg,
        mode=mode,
        reader=reader,
    )


model_option = options.model_option("model")
reader_option = options.reader_option()
gistnet_option = click.option(
    "--gistnet",
    "gistnet",
    default=None,
    metavar="PATH",
    help="GistNet checkpoint (default: the shipped one); the one the tree was gisted with.",
)
window_option = options.library_option(
    "--window",
    default_from="mcruntime.session:SessionConfig.window",
    apply=False,  # None: the session's own default (parsing stays free of torch)
    type=click.IntRange(256, WINDOW_MAX),
    help="Model positions per step.",
)


keys_option = click.option(
    "--keys",
    type=click.Choice([Keys.BM25, Keys.HYBRID]),
    default=None,
    help="Retrieval keys, recorded when a tree is created: hybrid (exact words and static "
    "meaning keys from the base model, for questions in other words; a new tree's default) or "
    "bm25 (exact words only). Default: the tree's own kind.",
)


@cli.command()
@click.argument("tree")
@click.argument("paths", nargs=-1, required=True)
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--source", default=None, help="Source name for stdin input (default: stdin).")
@click.option(
    "--chunk-tokens",
    default=None,
    show_default=str(CHUNK_TOKENS),
    type=click.IntRange(64),
    help="Tokens per commit: an interrupted ingest resumes from the last whole chunk.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).",
)
@click.option(
    "--allow-nonempty",
    is_flag=True,
    help="Create the tree in a folder that already holds other files (refused otherwise).",
)
@click.option(
    "--dask",
    "dask",
    default=None,
    metavar="ADDRESS|local:N",
    help="Spread tokenising, gisting and keys over a Dask cluster (a scheduler address, or "
    "local:N worker processes on this machine); this process commits. Same tree as without.",
)
@click.option(
    "--commit-every",
    "commit_every",
    type=click.IntRange(0),
    default=None,
    metavar="EPOCHS",
    help=f"With --dask: one commit per this many epochs of text ({DEFAULT_EPOCH:,} tokens each; "
    "0: one per file or chunk, as without --dask). Fewer commits go faster on object stores; an "
    "interrupted run redoes at most one batch. Default: mcruntime.bulk's.",
)
@keys_option
@model_option
@gistnet_option
@window_option
@storage_options_option
def ingest(
    tree,
    paths,
    include,
    exclude,
    source,
    chunk_tokens,
    progress,
    allow_nonempty,
    dask,
    commit_every,
    keys,
    model,
    gistnet,
    window,
    storage_options,
):
    """Add files, folders (recursively) or stdin (-) to TREE, creating it on first use.

    Each file becomes a segment named by its path; binary and non-UTF-8 files are skipped with
    a warning. Resumable: re-running skips every file (and every chunk of a large file) already
    committed, so after Ctrl-C just run the same command again.
    """
    if commit_every is not None and not dask:
        raise click.UsageError("--commit-every needs --dask (a serial ingest commits per chunk)")
    _check_target(tree, allow_nonempty)
    found = _scan(paths, include, exclude, source)
    if dask:
        return _ingest_dask(tree, found, dask, chunk_tokens, progress, keys, model, gistnet,
                            storage_options, commit_every)  # fmt: skip
    import mcstore

    try:  # before loading the model: a bad URL, corrupt tree or no credentials fail fast
        target = mcstore.open(tree, "a", storage_options=storage_options or None)
    except mcstore.TreeNotFound:
        target = tree  # the session creates it, bound to the model
    s = _session(
        target, storage_options, model=model, window=window, gistnet=gistnet, retrieval=keys
    )
    if s.created:
        click.echo(f"created {tree} for {s.base.name} ({_gistnet_note(s)})")
    _ingest_serial(tree, s, found, chunk_tokens, progress)


def _scan(paths, include, exclude, source):
    """The inputs PATHS name after the filters; a usage error if none is left."""
    from mcruntime.ingest import scan

    if "-" in paths and sys.stdin.isatty():
        click.echo("mc: reading stdin; end with Ctrl-D", err=True)
    found = scan(paths, include, exclude, stdin=sys.stdin.buffer, stdin_name=source or "stdin")
    if not found.inputs:
        raise found.nothing_to_ingest(
            paths, filtered=bool(include or exclude), filters="--include/--exclude"
        )
    _warn_skipped(found.skipped)
    return found


def _ingest_serial(tree: str, s, found, chunk_tokens, progress: bool) -> None:
    """Ingest in this process, a commit per chunk, with a progress bar in bytes."""
    from mcruntime.ingest import CHUNK_TOKENS, IngestReport, ingest_inputs

    report = IngestReport(skipped=[str(e) for e in found.skipped])
    t0 = time.perf_counter()
    bar = progress_bar(
        enabled=progress,
        total=sum(inp.size for inp in found.inputs),
        unit="B",
        unit_scale=True,
        desc="ingest",
    )

    def advance(done_bytes: int) -> None:
        rate = report.tokens / max(1e-9, time.perf_counter() - t0)
        bar.set_postfix_str(f"{report.tokens} tokens, {rate:.0f} tok/s", refresh=False)
        bar.update(done_bytes - bar.n)

    with _resumable(tree, report, len(found.inputs)), bar:
        ingest_inputs(
            s,
            found.inputs,
            chunk_tokens=chunk_tokens or CHUNK_TOKENS,
            report=report,
            on_progress=advance,
            on_skip=lambda e: bar.write(f"mc: warning: {e}; skipped", file=sys.stderr),
        )
    s.close()
    dt = time.perf_counter() - t0
    click.echo(
        f"ingested {report.files} file(s), {report.tokens} tokens in {report.commits} commit(s) "
        f"({report.tokens / max(dt, 1e-9):.0f} tokens/s); {report.skipped_done} already present"
        + (f", {len(report.skipped)} skipped" if report.skipped else "")
        + f"; {tree} is at version {s.tree.version} with {s.tree.length} tokens"
    )


def _ingest_dask(
    tree, found, address, chunk_tokens, progress, keys, model, gistnet, so, commit_every=None
):
    """`mc ingest --dask`: the same ingest, its work on a Dask cluster (mcruntime.bulk)."""
    from mcruntime.bulk import BulkConfig, BulkReport, ModelSpec, bulk_ingest, dask_client
    from mcruntime.ingest import CHUNK_TOKENS

    report = BulkReport(skipped=[str(e) for e in found.skipped])
    cfg = BulkConfig(chunk_tokens=chunk_tokens or CHUNK_TOKENS, retrieval=keys or "auto")
    if commit_every is not None:
        cfg = dataclasses.replace(cfg, commit_every_epochs=commit_every)
    bar = progress_bar(enabled=progress, total=sum(i.size for i in found.inputs), unit="B",
                       unit_scale=True, desc="ingest")  # fmt: skip
    with _resumable(tree, report, len(found.inputs)), dask_client(address) as client, bar:
        t0 = time.perf_counter()  # the rate without the cluster's start
        bulk_ingest(
            tree,
            found.inputs,
            client,
            model=ModelSpec(model=model, gistnet=gistnet),
            config=cfg,
            storage_options=so or None,
            report=report,
            on_progress=lambda n: bar.update(n - bar.n),
            on_skip=lambda e: bar.write(f"mc: warning: {e}; skipped", file=sys.stderr),
        )
    dt = time.perf_counter() - t0
    if report.created:
        click.echo(f"created {tree} for {report.model_name} (GistNet {report.gistnet_id})")
    click.echo(
        f"ingested {report.files} file(s), {report.tokens} tokens in {report.commits} commit(s) "
        f"({report.tokens / max(dt, 1e-9):.0f} tokens/s on {report.workers} worker(s)); "
        f"{report.skipped_done} already present"
        + (f", {len(report.skipped)} skipped" if report.skipped else "")
        + f"; {tree} is at version {report.version} with {report.length} tokens"
    )


@contextlib.contextmanager
def _resumable(tree: str, report, n_inputs: int):
    """An interrupted or conflicting ingest says how far it got and that a re-run continues."""
    import mcstore

    try:
        yield
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted after {report.inputs_done} of {n_inputs} input(s) and "
            f"{report.commits} commit(s); {tree} is at its last commit: run the same command "
            "again to continue"
        ) from None
    except mcstore.CommitConflict as e:
        raise mcstore.CommitConflict(
            f"{tree}: another writer committed while this ingest was running; "
            f"{report.commits} commit(s) landed before that: run the same command again "
            "to continue"
        ) from e


SKIPPED_SHOWN = 10  # skipped inputs named one by one; the rest are counted (all with --debug)


def _warn_skipped(skipped: list) -> None:
    """One warning per input that is not text, the first ten of them; then one line counting
    the rest by kind, so a folder of many binaries does not bury the summary."""
    ctx = click.get_current_context(silent=True)
    debug = bool(ctx and (ctx.find_root().obj or {}).get("debug"))
    shown = skipped if debug else skipped[:SKIPPED_SHOWN]
    for e in shown:
        click.echo(f"mc: warning: {e}; skipped", err=True)
    rest = skipped[len(shown) :]
    if rest:
        kinds: dict[str, int] = {}
        for e in rest:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        click.echo(f"mc: warning: {len(rest)} more inputs skipped ({counts}); --debug names them",
                   err=True)  # fmt: skip


def _check_target(tree: str, allow_nonempty: bool) -> None:
    """A tree is created only where nothing else is (see mcruntime.location)."""
    from mcruntime.errors import PathTaken
    from mcruntime.location import check_new

    try:
        check_new(tree, allow_nonempty=allow_nonempty)
    except PathTaken as e:
        if e.entries:
            raise PathTaken(f"{e} (or pass --allow-nonempty)", entries=e.entries) from None
        raise


def _gistnet_note(s) -> str:
    gid = s.binding()["gistnet"]["id"]
    if gid == "untrained":
        return "gists from an untrained GistNet: no checkpoint ships for this model yet"
    return f"GistNet {gid}"


@cli.command()
@tree_argument()
@click.option("--once", "once", default=None, help="Ask one question, print the answer, exit.")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--show-focus", is_flag=True, help="After each answer, list the spans read in detail."
)
@click.option(
    "--no-remember",
    "no_remember",
    is_flag=True,
    help="Answer from memory but keep these turns out of it (the tree is not changed). "
    "Interactively, a line starting with /private is not remembered either.",
)
@click.option(
    "--scorer", type=click.Choice(["lensnet", "similarity", "attention", "recency"]), default=None
)
@model_option
@gistnet_option
@window_option
@reader_option
@storage_options_option
def chat(
    tree, once, max_new_tokens, show_focus, no_remember, scorer, model, gistnet, window, reader,
    storage_options,
):  # fmt: skip
    """Talk with a model whose memory is TREE; every turn is remembered.

    Interactive: one question per line on stdin, answers streamed to stdout, Ctrl-D to leave.
    --once QUESTION answers one question and exits (for scripts). TREE must exist (`mc ingest`
    creates one).
    """
    import mcstore
    from mcruntime import InputError

    if once is not None and not once.strip():
        raise InputError("the question given to --once is empty", kind="empty")
    # open the tree before loading the model: a missing, corrupt or unreachable tree fails fast
    t = mcstore.open(tree, "a", storage_options=storage_options or None)
    s = _session(
        t, storage_options, model=model, window=window, scorer=scorer, gistnet=gistnet,
        reader=reader,
    )  # fmt: skip
    try:
        if once is not None:
            _answer(s, once, max_new_tokens, show_focus, not no_remember)
            return
        tty = sys.stdin.isatty()
        if tty:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
            click.echo(f"memory: {s.tree.length} tokens in {tree}. Ctrl-D to leave.", err=True)
        while True:
            q = read_line("you> " if tty else "")
            if q is None:
                if tty:
                    click.echo("", err=True)
                return
            private = q.startswith(PRIVATE)
            q = q.removeprefix(PRIVATE).strip() if private else q
            if q:
                _answer(s, q, max_new_tokens, show_focus, not (no_remember or private))
    finally:
        s.close()


PRIVATE = "/private"  # an interactive line starting with this is answered but not remembered


def read_line(prompt: str) -> str | None:
    """One line of the conversation (None at the end of input); InputError if its bytes are
    not UTF-8, whether stdin decodes strictly or escapes them as lone surrogates."""
    from mcruntime.errors import InputError

    bad = InputError("a line of input is not valid UTF-8; convert it first", kind="not UTF-8")
    try:
        line = input(prompt).strip()
        line.encode("utf-8")
    except EOFError:
        return None
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise bad from None
    return line


def _answer(s, question: str, max_new_tokens: int, show_focus: bool, remember: bool = True) -> None:
    import mcstore

    waiting = Waiting(sys.stderr)
    held = ""  # trailing blanks are printed only once more text follows them
    before = s.tree.version
    try:
        stream = s.chat_stream(question, max_new_tokens=max_new_tokens, remember=remember)
        with waiting:
            for piece in stream:
                waiting.stop()
                text = held + piece
                shown = text.rstrip()
                held = text[len(shown) :]
                click.echo(shown, nl=False)
    except mcstore.CommitConflict as e:
        click.echo()
        saved = s.tree.version != before  # the question and answer are one commit
        raise mcstore.CommitConflict(
            f"{s.tree.url}: another writer committed while this answer was written; "
            + (
                "this turn was saved, only its retrieval index chunk was not (a later commit "
                "stores it)"
                if saved
                else "this turn was not saved: ask again"
            )
        ) from e
    click.echo()
    if show_focus:
        answer = stream.turn.answer
        click.echo(format_recall(answer.recall), err=True)
        click.echo(format_focus(answer.focus), err=True)
        t = answer.timings
        click.echo(
            f"first token after {t['first_token_s']:.1f}s; {t['tokens']} tokens in "
            f"{t['focus_s'] + t['decode_s']:.1f}s" + ("" if remember else "; not remembered"),
            err=True,
        )


class Waiting:
    """ "mc: reading the memory… 3s" on a terminal's stderr while the answer has not started
    (the window is refocused and its positions computed: seconds on a CPU), erased when the
    first piece of the answer arrives. Silent where stderr is not a terminal."""

    def __init__(self, stream, *, enabled: bool | None = None, after: float = 1.0, every=1.0):
        import threading

        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.after, self.every = after, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.shown = 0  # status lines drawn (for tests)

    def _run(self) -> None:
        t0 = time.perf_counter()
        if self._stop.wait(self.after):
            return
        while not self._stop.is_set():
            self.stream.write(f"\rmc: reading the memory… {time.perf_counter() - t0:.0f}s")
            self.stream.flush()
            self.shown += 1
            self._stop.wait(self.every)

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self.enabled:
            self._thread.join()
            if self.shown:
                self.stream.write("\r\033[K")  # erase the status line
                self.stream.flush()

    def __exit__(self, *exc) -> None:
        self.stop()


def format_recall(passages: list[dict]) -> str:
    if not passages:
        return "recall: no passage matched the question"
    lines = ["recall: passages read back before the question (best last):"]
    for p in passages:
        lines.append(
            f"  tokens {p['start']:>9}-{p['stop']:<9} {p['source'] or '?'} (score {p['score']})"
        )
    return "\n".join(lines)


def format_focus(spans: list[dict]) -> str:
    """The raw spans of a focus (``Answer.focus``, one per segment): expanded ones, then the
    recent tail."""
    detail = [sp for sp in spans if sp.get("kind", "detail") == "detail"]
    tail = [sp for sp in spans if sp.get("kind") == "tail"]
    lines = (
        ["focus: spans read in full detail:"]
        if detail
        else ["focus: no span expanded; everything older than the recent tail is gists"]
    )
    lines += [f"  tokens {sp['start']:>9}-{sp['stop']:<9} {sp['source'] or '?'}" for sp in detail]
    if tail:
        lines.append("recent tail, always raw:")
        lines += [f"  tokens {sp['start']:>9}-{sp['stop']:<9} {sp['source'] or '?'}" for sp in tail]
    return "\n".join(lines)


@cli.command()
@click.option(
    "--tree", "tree", default="demo.mc", show_default=True, help="Where to build the demo tree."
)
@click.option("--words", default=24000, show_default=True, help="Size of the generated journal.")
@model_option
@window_option
@reader_option
def demo(tree, words, model, window, reader):
    """Ingest a long generated journal, then ask about a fact far from its end."""
    from mcruntime.demo import JOURNAL_SOURCE, clear_demo_tree, journal
    from mcruntime.errors import PathTaken

    text, facts = journal(words)
    try:
        clear_demo_tree(tree)
    except PathTaken as e:
        raise PathTaken(f"{e} (--tree picks another path)", entries=e.entries) from None
    t0 = time.perf_counter()
    s = _session(tree, {}, model=model, window=window, reader=reader)
    s.ingest(text, source=JOURNAL_SOURCE)
    n = s.tree.length
    click.echo(
        f"ingested a {n}-token journal into {tree} in {time.perf_counter() - t0:.1f}s "
        f"({s.base.name}, {_gistnet_note(s)})"
    )
    fact = facts[0]
    depth = text.index(fact.text) / len(text)
    who = s.reader.name if s.reader is not None else f"the keeper, {s.base.name}"
    click.echo(
        f"the fact sits {int((1 - depth) * n)} tokens before the end; window {s.config.window}; "
        f"answers by {who}"
    )
    click.echo(f"you> {fact.question}")
    turn = s.ask(fact.question, max_new_tokens=48)
    answer = turn.text
    click.echo(f"mc> {answer.strip()}")
    click.echo(format_recall(turn.answer.recall))
    click.echo(format_focus(turn.answer.focus))
    ok = fact.answer.lower() in answer.lower()
    click.echo(
        f"expected {fact.answer!r}: {'remembered' if ok else 'NOT remembered'} "
        f"({time.perf_counter() - t0:.0f}s in all)"
    )
    s.close()
