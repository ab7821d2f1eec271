"""The README runs as written: its shell blocks, in order, on a fresh copy of the repository
(tests/readme.py, docs/testing.md), so that it cannot drift from the program."""

import pytest

from tests.readme import README, port_is_free, run_readme, script, shell_blocks
from tests.services import IN_CI, require
from tests.stack import LiveStack

pytestmark = pytest.mark.services


def test_the_readme_s_shell_blocks_run_as_written_on_a_fresh_copy(tmp_path):
    require("postgres", "rabbitmq", "redis")
    if not port_is_free() and not IN_CI:
        pytest.skip("port 8000 is taken: the README's servers need it")
    with LiveStack(tmp_path / "stack") as stack:  # the full stack's database and vhost, of this run's own
        services = {name: stack.env[name] for name in ("DATABASE_URL", "BROKER_URL", "REDIS_URL")}
        output = run_readme(tmp_path, services)
    ran = [block for block in shell_blocks(README.read_text()) if block.kind != "skip"]
    assert all(f"--- README line {block.line}" in output for block in ran)


def test_the_readme_starts_make_run_then_make_stack_and_runs_a_block_against_each():
    run = [block for block in shell_blocks(README.read_text()) if block.kind != "skip"]
    servers = [(i, block) for i, block in enumerate(run) if block.kind == "server"]
    assert [block.commands.split()[:2] for _, block in servers] == [["make", "run"], ["make", "stack"]]
    assert all(run[i + 1].kind == "run" for i, _ in servers)  # something is tried against each


def test_a_block_with_an_unknown_info_string_is_an_error_not_a_block_left_out():
    with pytest.raises(ValueError, match="line 3"):
        shell_blocks("Run it:\n\n```sh sever\nmake run\n```\n")
    assert "make test" not in script(shell_blocks("```sh skip\nmake test\n```\n```text\nmake test\n```\n"))
