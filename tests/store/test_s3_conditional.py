"""Conditional writes on S3: the commit primitive is a PUT with ``If-None-Match: *``.

A server must refuse the second create of a name (412), or the store must refuse to write
through it: a server that ignores the header would let two writers both commit version n and
one commit would vanish without a word. Both sides are checked on real HTTP servers: SeaweedFS
and moto honour the header; the "ignoring" server is moto behind a WSGI middleware that drops
the header before moto sees it, i.e. an S3 server without conditional writes (S3 itself before
August 2024, and some compatible servers still)."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

import mcstore
from tests.store.helpers import DIM, gister

NOIF_BUCKET = "mc-noif"  # moto's state is per process: keep apart from the moto_server bucket


class _DropIfNoneMatch:
    """WSGI middleware: every request reaches the app without its If-None-Match header."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.pop("HTTP_IF_NONE_MATCH", None)
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def ignoring_server():
    """An S3 server on 127.0.0.1 that ignores If-None-Match (moto behind _DropIfNoneMatch)."""
    import s3fs
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = _DropIfNoneMatch(DomainDispatcherApplication(create_backend_app))
    srv = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    opts = {
        "endpoint_url": f"http://127.0.0.1:{srv.server_address[1]}",
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    s3fs.S3FileSystem(**opts).call_s3("create_bucket", Bucket=NOIF_BUCKET)
    yield opts
    srv.shutdown()
    th.join()


def _url(name: str = "t") -> str:
    return f"s3://{NOIF_BUCKET}/{uuid.uuid4().hex[:10]}/{name}"


def _raw_creates(so: dict, path: str) -> list[str]:
    """Create one object twice with If-None-Match: * straight through s3fs: what happened."""
    import s3fs

    fs = s3fs.S3FileSystem(**so)
    out = []
    for data in (b"first", b"second"):
        try:
            fs.pipe_file(path, data, mode="create")
            out.append("created")
        except FileExistsError:
            out.append("exists")
        except OSError as e:  # a 412 that does not name the condition (see below)
            status = e.__cause__.response["ResponseMetadata"]["HTTPStatusCode"]
            out.append(f"http {status}")
    out.append(fs.cat_file(path).decode())
    return out


def test_the_fake_really_ignores_the_header(ignoring_server):
    """The premise of the tests below: on this server a second create replaces the object."""
    path = f"{NOIF_BUCKET}/raw/{uuid.uuid4().hex}"
    assert _raw_creates(ignoring_server, path) == ["created", "created", "second"]


@pytest.mark.parametrize("server", ["moto_server", "seaweed_server"])
def test_real_servers_refuse_the_second_create(server, request):
    """moto names the failed condition, so s3fs raises FileExistsError; SeaweedFS answers a
    bare 412, which s3fs turns into a plain OSError: S3Backend reads the status itself."""
    so = request.getfixturevalue(server)["storage_options"]
    path = f"mc-test/raw/{uuid.uuid4().hex}"
    first, second, stored = _raw_creates(so, path)
    assert (first, stored) == ("created", "first")
    assert second == {"moto_server": "exists", "seaweed_server": "http 412"}[server]
    be = mcstore.open_backend(f"s3://mc-test/{uuid.uuid4().hex[:10]}", so)
    assert be.probe_conditional_writes()
    assert be.put_if_absent("log/1.json", b"a") and not be.put_if_absent("log/1.json", b"b")
    assert be.read("log/1.json") == b"a"
    assert be.walk("") == [("log/1.json", 1, be.walk("")[0][2])]  # the probe left nothing


def test_the_probe_sees_an_ignoring_server(ignoring_server):
    be = mcstore.open_backend(_url(), ignoring_server)
    assert not be.probe_conditional_writes()
    assert be.walk("") == []  # the probe object is deleted again


def test_writes_through_an_ignoring_server_are_refused(ignoring_server):
    url = _url()
    with pytest.raises(mcstore.StoreAccessError) as ei:
        mcstore.create(url, dim=DIM, block=4, epoch=64, storage_options=ignoring_server)
    msg = str(ei.value)
    assert url in msg and ignoring_server["endpoint_url"] in msg
    assert "does not honour conditional writes" in msg and "unsafe_single_writer=True" in msg
    assert ei.value.exit_code == mcstore.StoreAccessError.exit_code
    be = mcstore.open_backend(url, ignoring_server)
    assert be.walk("") == []  # refused before anything was written
    with pytest.raises(mcstore.StoreAccessError, match="does not honour conditional writes"):
        be.put_if_absent("log/1.json", b"x")
    assert not be.exists("log/1.json")


def test_unsafe_single_writer_is_an_explicit_opt_in(ignoring_server):
    """With the option a single writer works (check then write), the backend says it is not
    race-safe, and the tree is readable with or without the option; appending without it is
    refused again."""
    url = _url()
    unsafe = {**ignoring_server, "unsafe_single_writer": True}
    t = mcstore.create(url, dim=DIM, block=4, epoch=64, storage_options=unsafe)
    assert not t.backend.atomic_create
    t.append(np.arange(100), gister=gister, source="a")
    t.append(np.arange(100, 130), gister=gister, source="b")
    assert not t.backend.put_if_absent("zarr.json", b"{}")  # still never overwrites
    for so in (unsafe, ignoring_server):
        r = mcstore.open(url, storage_options=so)
        assert r.tokens().tolist() == list(range(130))
    w = mcstore.open(url, "a", storage_options=ignoring_server)
    with pytest.raises(mcstore.StoreAccessError, match="does not honour conditional writes"):
        w.append([1, 2, 3], gister=gister, source="c")
    assert mcstore.open(url, storage_options=unsafe).tokens().tolist() == list(range(130))


@pytest.mark.parametrize("server", ["moto_server", "seaweed_server"])
def test_the_option_changes_nothing_where_the_server_honours_the_header(server, request):
    so = {**request.getfixturevalue(server)["storage_options"], "unsafe_single_writer": True}
    be = mcstore.open_backend(f"s3://mc-test/{uuid.uuid4().hex[:10]}", so)
    assert be.put_if_absent("k", b"1") and not be.put_if_absent("k", b"2")
    assert be.atomic_create


def test_the_cli_says_so_in_one_line_and_takes_the_option(ignoring_server):
    from tests.store.test_cli import run_main

    url = _url("cli.mc")
    unsafe = {**ignoring_server, "unsafe_single_writer": True}
    mcstore.create(url, dim=DIM, block=4, epoch=64, storage_options=unsafe).append(
        np.arange(40), gister=gister, source="a"
    )
    so = ignoring_server
    opts = ["-o", f"endpoint_url={so['endpoint_url']}", "-o", "key=testing", "-o", "secret=testing"]
    code, _, err = run_main(["tag", url, "v1", *opts])
    assert code == mcstore.StoreAccessError.exit_code
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "does not honour conditional writes" in err and so["endpoint_url"] in err
    code, _, err = run_main(["tag", url, "v1", *opts, "-o", "unsafe_single_writer=true"])
    assert code == 0, err
    assert mcstore.open(url, version="v1", storage_options=so).length == 40
