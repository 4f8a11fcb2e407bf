"""`mc` on an S3 tree through the moto server: ingest, chat --once, info, log and show, with
the endpoint from --storage-option or from the usual AWS variables; no credentials → one line."""

from __future__ import annotations

import uuid

import mcstore
from tests.cli.helpers import TINY, mc_env, one_error_line, run_mc, run_proc, state
from tests.store.conftest import BUCKET


def _url():
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}/notes.mc"


def test_ingest_chat_info_on_s3(moto_server, docs, tmp_path):
    so = moto_server["storage_options"]
    url = _url()
    # the endpoint as a storage option; the credentials from AWS_ACCESS_KEY_ID/… (set for moto)
    o = ["-o", f"endpoint_url={moto_server['endpoint']}"]
    r = run_mc(["ingest", url, docs, *o, *TINY])
    assert r.code == 0, r.err
    assert r.out.startswith(f"created {url}") and "ingested 5 file(s)" in r.out
    r = run_mc(["chat", url, "--once", "What is the harbour code?", "--show-focus",
                "--max-new-tokens", "6", *o, *TINY])  # fmt: skip
    assert r.code == 0, r.err
    assert "focus:" in r.err
    v, n, segs = state(url, so)
    assert [s[2] for s in segs[-2:]] == ["chat:user", "chat:assistant"]
    r = run_mc(["info", url, *o])
    assert r.code == 0 and f"version   {v}" in r.out and f"length    {n} tokens" in r.out
    r = run_mc(["log", url, *o, "-n", "2"])
    assert r.code == 0 and "chat: user + assistant" in r.out.splitlines()[0]
    png = tmp_path / "s3.png"
    r = run_mc(["show", url, *o, "--png", png, *TINY])
    assert r.code == 0 and png.stat().st_size > 5000
    r = run_mc(["ingest", url, docs, *o, *TINY])  # resumable on S3 too
    assert r.code == 0 and "0 commit(s)" in r.out and "5 already present" in r.out
    assert state(url, so)[0] == v
    r = run_mc(["verify", url, *o])
    assert r.code == 0, r.err


def test_endpoint_from_aws_variables_in_a_real_process(moto_server):
    so = moto_server["storage_options"]
    url = _url()
    t = mcstore.create(url, dim=8, block=4, epoch=64, storage_options=so)
    env = mc_env(AWS_ENDPOINT_URL=moto_server["endpoint"])
    p = run_proc(["info", url], env=env)
    assert p.returncode == 0 and f"tree      {t.url}" in p.stdout, p.stderr


def test_no_credentials_is_one_line(moto_server, tmp_path):
    url = _url()
    mcstore.create(url, dim=64, storage_options=moto_server["storage_options"])
    before = state(url, moto_server["storage_options"])
    # no AWS variables, no ~/.aws, no instance metadata, no options
    env = {k: v for k, v in mc_env().items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    o = ["-o", f"endpoint_url={moto_server['endpoint']}"]
    for args in (["info", url], ["chat", url, "--once", "hi", *o, *TINY],
                 ["ingest", url, "-", *o, *TINY]):  # fmt: skip
        p = run_proc(args, env=env, input="some text")
        assert p.returncode == mcstore.StoreAccessError.exit_code, (args, p.stderr)
        one_error_line(p.stderr, url, "no credentials", "AWS_ACCESS_KEY_ID")
        assert "botocore" not in p.stderr
    assert state(url, moto_server["storage_options"]) == before
