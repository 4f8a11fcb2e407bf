"""`mc ingest`, `mc chat`, `mc show`, `mc demo`: the commands that need a model."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from cli.main import cli
from cli.options import storage_options_option, tree_url


def _session(tree: str, storage_options: dict, *, model: str, window: int, mode: str = "a", **kw):
    from mcruntime import Session, SessionConfig

    cfg = SessionConfig(**{k: v for k, v in kw.items() if v is not None})
    return Session(
        tree_url(tree),
        model=model,
        window=window,
        storage_options=storage_options,
        config=cfg,
        mode=mode,
    )


model_option = click.option(
    "--model",
    default="smollm2-135m-instruct",
    show_default=True,
    help="Base model: a name, a folder or a .gguf file.",
)
window_option = click.option(
    "--window",
    default=2048,
    show_default=True,
    type=click.IntRange(256, 8192),
    help="Model positions per step.",
)


@cli.command()
@click.argument("tree")
@click.argument("paths", nargs=-1, required=True)
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--source", default=None, help="Source name for stdin input (default: stdin).")
@model_option
@window_option
@storage_options_option
def ingest(tree, paths, include, exclude, source, model, window, storage_options):
    """Add files, folders (recursively) or stdin (-) to TREE, creating it on first use.

    Resumable: re-running skips every file (and every chunk of a large file) already committed.
    """
    from tqdm import tqdm

    from mcruntime import SessionError
    from mcruntime.ingest import IngestReport, decode_text, done_chunks, ingest_text, walk

    files = [] if paths == ("-",) else list(walk([p for p in paths if p != "-"], include, exclude))
    use_stdin = "-" in paths
    if not files and not use_stdin:
        raise SessionError(
            f"no files to ingest under {', '.join(paths)} (check --include/--exclude)"
        )
    texts: list[tuple[str, str]] = []
    if use_stdin:
        data = sys.stdin.buffer.read()
        texts.append((source or "stdin", decode_text(data, "stdin")))
    report = IngestReport()
    for f in files:
        try:
            texts.append((str(f), decode_text(f.read_bytes(), str(f))))
        except SessionError as e:
            report.skipped_binary.append(str(f))
            click.echo(f"mc: skipping {e}", err=True)
    texts = [(s, t) for s, t in texts if t.strip()] or _nothing(paths)
    s = _session(tree, storage_options, model=model, window=window)
    done = done_chunks(s)
    total = sum(len(t) for _, t in texts)
    t0 = time.perf_counter()
    with tqdm(total=total, unit="char", unit_scale=True, desc="ingest", disable=None) as bar:
        for src, text in texts:
            before = report.tokens
            ingest_text(s, text, src, done=done, report=report)
            bar.update(len(text))
            bar.set_postfix(
                tokens=report.tokens,
                tok_s=f"{report.tokens / max(1e-9, time.perf_counter() - t0):.0f}",
            )
            if report.tokens == before:
                bar.write(f"already in the tree: {src}")
    s.close()
    dt = time.perf_counter() - t0
    click.echo(
        f"ingested {report.files} file(s), {report.tokens} tokens in {report.commits} commit(s) "
        f"({report.tokens / max(dt, 1e-9):.0f} tokens/s); {report.skipped_done} already present; "
        f"tree {tree} is at version {s.tree.version} with {s.tree.length} tokens"
    )


def _nothing(paths):
    from mcruntime import SessionError

    raise SessionError(
        f"no text to ingest in {', '.join(paths)}: every input was empty, binary or not UTF-8"
    )


@cli.command()
@click.argument("tree")
@click.option("--once", "once", default=None, help="Ask one question, print the answer, exit.")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--show-focus", is_flag=True, help="After each answer, list the spans read in detail."
)
@click.option(
    "--scorer", type=click.Choice(["lensnet", "similarity", "attention", "recency"]), default=None
)
@model_option
@window_option
@storage_options_option
def chat(tree, once, max_new_tokens, show_focus, scorer, model, window, storage_options):
    """Talk with a model whose memory is TREE; every turn is remembered."""
    s = _session(tree, storage_options, model=model, window=window, scorer=scorer)
    try:
        if once is not None:
            _answer(s, once, max_new_tokens, show_focus)
            return
        click.echo(f"memory: {s.tree.length} tokens in {tree}. Ctrl-D to leave.", err=True)
        while True:
            try:
                q = input("you> ").strip()
            except EOFError:
                click.echo("", err=True)
                return
            if q:
                _answer(s, q, max_new_tokens, show_focus)
    finally:
        s.close()


def _answer(s, question: str, max_new_tokens: int, show_focus: bool) -> None:
    for piece in s.chat_stream(question, max_new_tokens=max_new_tokens):
        click.echo(piece, nl=False)
    click.echo()
    if show_focus:
        click.echo(format_focus(s.last.focus), err=True)


def format_focus(spans: list[dict]) -> str:
    if not spans:
        return "focus: only the recent tail is raw; everything older is gists"
    lines = ["focus: spans read in full detail:"]
    for sp in spans:
        lines.append(f"  tokens {sp['start']:>9}-{sp['stop']:<9} {sp['source'] or '?'}")
    return "\n".join(lines)


@cli.command()
@click.option(
    "--tree", "tree", default="demo.mc", show_default=True, help="Where to build the demo tree."
)
@click.option("--words", default=24000, show_default=True, help="Size of the generated journal.")
@model_option
@window_option
def demo(tree, words, model, window):
    """Ingest a long generated journal, then ask about a fact far from its end."""
    import shutil

    from mcruntime.demo import journal

    text, facts = journal(words)
    path = Path(tree)
    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    s = _session(str(path), {}, model=model, window=window)
    s.ingest(text, source="station-journal.txt")
    n = s.tree.length
    click.echo(f"ingested a {n}-token journal into {tree} in {time.perf_counter() - t0:.1f}s")
    fact = facts[0]
    depth = text.index(fact.text) / len(text)
    click.echo(f"the fact sits {int((1 - depth) * n)} tokens before the end; window {window}")
    click.echo(f"you> {fact.question}")
    answer = s.ask(fact.question, max_new_tokens=48)
    click.echo(f"mc> {answer.strip()}")
    click.echo(format_focus(s.last.focus))
    ok = fact.answer.lower() in answer.lower()
    click.echo(
        f"expected {fact.answer!r}: {'remembered' if ok else 'NOT remembered'} "
        f"({time.perf_counter() - t0:.0f}s in all)"
    )
    s.close()
