import json

import pytest
import torch

import mcmodels


def _trained_like(tiny):
    torch.manual_seed(1)
    g = mcmodels.GistNet.for_base(tiny, hidden=32, layers=1)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return g


def test_round_trip_is_bit_exact(tiny, tmp_path):
    g = _trained_like(tiny)
    rec = mcmodels.save_checkpoint(
        g, tmp_path / "g", base=tiny, recipe={"command": "x"}, metrics={"m": 1}
    )
    assert g.checkpoint_hash == rec["checkpoint_hash"] and g.checkpoint_id.startswith("gistnet-")
    h = mcmodels.load_gistnet(tmp_path / "g")
    for k, v in g.state_dict().items():
        assert torch.equal(v, h.state_dict()[k]), k
    x = tiny.embed(torch.randint(0, 256, (2, 32)))
    assert torch.equal(g(x, 1), h(x, 1))
    assert h.checkpoint_hash == g.checkpoint_hash
    # saving again gives the same hash (stable content hash, independent of recipe/metrics)
    rec2 = mcmodels.save_checkpoint(h, tmp_path / "g2", base=tiny, recipe={"other": 1})
    assert rec2["checkpoint_hash"] == rec["checkpoint_hash"]
    js = json.loads((tmp_path / "g.json").read_text())
    assert js["base"]["hash"] == tiny.binding()["hash"] and js["config"]["hidden"] == 32


def test_fp16_checkpoint_loads_to_fp32(tiny, tmp_path):
    g = _trained_like(tiny)
    mcmodels.save_checkpoint(g, tmp_path / "h.safetensors", base=tiny, dtype="float16")
    h = mcmodels.load_gistnet(tmp_path / "h")
    assert h.inp.weight.dtype == torch.float32
    torch.testing.assert_close(h.inp.weight, g.inp.weight, atol=1e-3, rtol=1e-3)
    mcmodels.save_checkpoint(h, tmp_path / "h2", base=tiny, dtype="float16")
    assert mcmodels.read_record(tmp_path / "h2")["checkpoint_hash"] == h.checkpoint_hash


def test_lensnet_round_trip(tiny, tmp_path):
    lens = mcmodels.LensNet.for_base(tiny, hidden=32)
    mcmodels.save_checkpoint(lens, tmp_path / "l", base=tiny)
    l2 = mcmodels.load_lensnet(tmp_path / "l")
    for k, v in lens.state_dict().items():
        assert torch.equal(v, l2.state_dict()[k])
    with pytest.raises(mcmodels.CheckpointError):
        mcmodels.load_gistnet(tmp_path / "l")


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tiny, tmp_path):
    g = _trained_like(tiny)
    mcmodels.save_checkpoint(g, tmp_path / "g", base=tiny)
    with pytest.raises(mcmodels.CheckpointError):
        mcmodels.load_gistnet(tmp_path / "missing")
    raw = bytearray((tmp_path / "g.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "g.safetensors").write_bytes(bytes(raw))
    with pytest.raises(mcmodels.CheckpointError):
        mcmodels.load_gistnet(tmp_path / "g")


def test_no_shipped_default_for_the_tiny_model(tiny):
    assert mcmodels.default_gistnet(tiny) is None
    assert mcmodels.default_lensnet(tiny) is None


def test_checkpoint_files_are_readable_by_others(tiny, tmp_path):
    import os

    g = _trained_like(tiny)
    mcmodels.save_checkpoint(g, tmp_path / "g", base=tiny)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "g.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_shipped_checkpoints_listing(tiny):
    assert mcmodels.shipped_checkpoints(tiny) == []
    for rec in mcmodels.shipped_checkpoints():
        assert {"kind", "checkpoint_hash", "path"} <= set(rec)
