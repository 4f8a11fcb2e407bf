"""`mc bench NAME` reaches the same benchmarks as `python -m bench NAME`."""

from __future__ import annotations

from click.testing import CliRunner

from bench import COMMANDS
from cli.main import cli
from cli.show import BENCHES


def test_mc_bench_names_match_python_m_bench():
    assert set(BENCHES) == set(COMMANDS)


def test_mc_bench_passes_arguments_through():
    # argparse inside the benchmark rejects the bad value: exit 2, nothing run
    r = CliRunner().invoke(cli, ["bench", "footprint", "--length", "many"])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, ["bench", "nope"])
    assert r.exit_code == 2 and "nope" in r.output
