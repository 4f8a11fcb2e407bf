"""Forget and purge through a session (issue 24): a secret planted in one document among
more than 50k tokens is found, forgotten (gone from search, recall, export and every later
read), and after a purge no object under the tree, on local disk or S3 (moto), holds its text,
its token ids or its words' index terms; every kept version still verifies."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

import mcstore
from mcruntime import Session
from mcruntime.errors import InputError
from mcruntime.exchange import export_lines
from mcruntime.lexical import BlockTerms, term_ids, words
from mcstore.testing import find_bytes
from tests.runtime.text import prose
from tests.store.conftest import BUCKET, moto_server  # noqa: F401

SECRET = "zebra-quartz-4471"
QUESTION = "What is the vault password?"


def build(base, url, so=None) -> Session:
    s = Session(url, model=base, window=512, storage_options=so)
    for i in range(3):
        s.ingest(prose(1800, i), f"notes/n{i}.md")
    s.ingest(f"Meeting notes. The vault password is {SECRET}. Do not share it.", "secret.md")
    s.remember_turn("Remind me of the vault code", f"The vault password is {SECRET}.")
    for i in range(3, 6):
        s.ingest(prose(1800, i), f"notes/n{i}.md")
    assert s.tree.length >= 50_000
    return s


def recalled_text(s: Session, turn) -> str:
    return "".join(
        s.base.tokenizer.decode([int(i) for i in s.tree.tokens(r["start"], r["stop"])])
        for r in turn.recall
    )


def everything_a_reader_sees(s: Session) -> str:
    found = json.dumps(s.find(f"vault password {SECRET}", k=20))
    turn = s.ask(QUESTION, max_new_tokens=4, remember=False)
    exported = "".join(export_lines(s.tree, s.base.tokenizer))
    return found + recalled_text(s, turn) + exported


def index_terms(tree) -> set[int]:
    out: set[int] = set()
    for name in tree.objects():
        if name.startswith("retrieval/bm25/"):
            z = mcstore.load_npz(tree.read_object(name), max_bytes=2**28)
            out |= {int(x) for x in BlockTerms.from_arrays(z).terms}
    return out


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "m.mc"), None
    ms = request.getfixturevalue("moto_server")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/m.mc", ms["storage_options"]


def test_a_forgotten_secret_is_gone_and_purged(base, where):
    url, so = where
    s = build(base, url, so)
    assert SECRET in everything_a_reader_sees(s)  # found before
    assert SECRET in recalled_text(s, s.turn)  # the session's newest turn
    done = s.forget(match=SECRET.upper())  # case-insensitive
    assert done.documents == [3, 5] and len(done.spans) == 2 and done.version == s.tree.version
    assert SECRET not in everything_a_reader_sees(s)
    fresh = Session(url, model=base, window=512, storage_options=so)  # what another reader sees
    assert SECRET not in everything_a_reader_sees(fresh)
    assert fresh.forgotten()[0]["rule"]["match_chars"] == len(SECRET)
    assert SECRET not in json.dumps(fresh.forgotten())  # the log says how, not what
    secret_terms = {int(x) for x in term_ids(words(SECRET))}
    assert not secret_terms & index_terms(fresh.tree)
    old = mcstore.open(url, "r", version=done.version - 1, storage_options=so)
    assert secret_terms <= index_terms(old)  # older versions keep it until the purge

    rep = mcstore.purge(url, storage_options=so, grace=0, no_live_writers=True)
    assert rep.expired and rep.gc.removed
    ids = np.asarray(base.tokenizer.encode(SECRET), np.int32)
    needles = {"text": SECRET.encode(), "token ids": ids.tobytes()}
    assert find_bytes(mcstore.backend_for(url, so), needles) == []
    after = mcstore.open(url, "r", storage_options=so)
    for v in range(done.version, after.version + 1):
        mcstore.verify(url, version=v, storage_options=so)
    assert SECRET not in everything_a_reader_sees(Session(url, model=base, window=512,
                                                          storage_options=so))  # fmt: skip


def test_forget_by_document_and_by_source(base, tmp_path):
    s = Session(str(tmp_path / "d.mc"), model=base, window=512)
    s.ingest("alpha kiwi text " * 20, "a/one.md")
    s.ingest("beta mango text " * 20, "b/two.md")
    s.ingest("gamma papaya text " * 20, "a/three.md")
    v = s.tree.version
    done = s.forget(source="a/*")
    assert done.documents == [0, 2] and done.version == v + 1
    docs = [json.loads(x) for x in export_lines(s.tree, base.tokenizer)]
    assert "kiwi" not in docs[0]["text"] and "papaya" not in docs[2]["text"]
    assert "mango" in docs[1]["text"] and "[forgotten]" in docs[0]["text"]
    assert [d["source"] for d in docs] == ["a/one.md", "b/two.md", "a/three.md"]
    s.forget(document=1)
    assert "mango" not in "".join(export_lines(s.tree, base.tokenizer))
    assert s.tree.length == sum(d["tokens"] for d in docs)  # every position kept
    assert [r["rule"] for r in s.forgotten()] == [{"source": "a/*"}, {"document": 1}]


def test_a_retried_forget_commits_nothing_and_logs_once(base, tmp_path):
    s = Session(str(tmp_path / "r.mc"), model=base, window=512)
    s.ingest("alpha kiwi text " * 20, "a/one.md")
    s.ingest("beta mango text " * 20, "b/two.md")
    first = s.forget(match="kiwi")
    assert first.version is not None and s.forget(match="kiwi").version is None
    whole = s.forget(document=0)  # the rest of the document: not the kiwis again
    seg = s.tree.segments()[0]
    assert whole.documents == [0] and whole.tokens == (seg.stop - seg.start) - first.tokens
    v = s.tree.version
    for again in ({"document": 0}, {"source": "a/*"}, {"match": "kiwi"}):
        done = s.forget(**again)
        assert done.version is None and done.tokens == 0 and done.documents == []
    assert s.tree.version == v and len(s.forgotten()) == 2
    assert s.forget(source="*").documents == [1]  # only what still holds text


def test_a_rule_that_names_nothing_commits_nothing(base, tmp_path):
    s = Session(str(tmp_path / "n.mc"), model=base, window=512)
    s.ingest("some text about rivers", "r.md")
    v = s.tree.version
    assert s.forget(match="not in there").version is None
    assert s.forget(source="x/*").version is None
    for bad in ({}, {"document": 5}, {"match": "  "}, {"document": 0, "match": "x"}):
        with pytest.raises(InputError):
            s.forget(**bad)
    assert s.tree.version == v
