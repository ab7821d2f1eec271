"""bench.profile: what a profile of the stack says, read from py-spy's collapsed stacks."""

from bench import profile

THREAD = "_bootstrap (threading.py:1002);run (processing/worker/actors.py:80)"
STACKS = "\n".join(
    [
        f"{THREAD};load_image (processing/imaging/codecs.py:95);load (PIL/ImageFile.py:296) 6",
        f"{THREAD};encode_image (processing/imaging/codecs.py:290) 3",
        "_bootstrap (threading.py:1002);poll (pika/adapters/select_connection.py:10) 1",
    ]
)


def test_the_summary_gives_our_functions_inclusive_shares_and_any_function_its_own(tmp_path):
    stacks = tmp_path / "worker-1.txt"
    stacks.write_text(STACKS)

    lines = profile.summary(stacks).splitlines()

    assert lines[0] == "  worker-1.txt: 10 samples; inclusive, our code"
    inclusive = lines[1 : lines.index("  self")]
    assert inclusive == [
        "     90.0%  run (processing/worker/actors.py)",
        "     60.0%  load_image (processing/imaging/codecs.py)",
        "     30.0%  encode_image (processing/imaging/codecs.py)",
    ]
    own = lines[lines.index("  self") + 1 :]
    assert own[0] == "     60.0%  load (PIL/ImageFile.py)"


def test_a_profile_without_samples_says_so(tmp_path):
    empty = tmp_path / "server-1.txt"
    empty.write_text("")
    assert profile.summary(empty) == "  server-1.txt: no samples"
