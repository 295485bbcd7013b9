"""`audiosplit mix`'s pieces that need no gateway: its options, and the query they make."""

import pytest

from gateway import cli
from gateway.cli.api import attachment_name
from gateway.cli.mix import mix_params
from test.unit.gateway.test_cli import subparser


def test_every_option_says_what_it_does_and_its_default():
    for action in subparser("mix")._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "default" in action.help, action.option_strings


def args(*argv: str):
    return cli.build_parser().parse_args(["mix", "JOBID123", *argv])


def test_mute_and_gain_become_one_gains_query():
    levels = ["--mute", "vocals", "--gain", "drums=-6", "--gain", "bass=+3", "--pan", "other=-0.5"]
    a = args("--speed", "0.8", "--semitones", "-2", *levels, "--format", "mp3", "-o", "x.mp3")
    assert mix_params(a) == {
        "speed": "0.8",
        "semitones": "-2.0",
        "format": "mp3",
        "gains": "vocals:-inf,drums:-6,bass:+3",
        "pan": "other:-0.5",
    }
    assert str(a.out) == "x.mp3"
    assert mix_params(args()) == {"speed": "1.0", "semitones": "0.0", "format": "wav"}


@pytest.mark.parametrize("bad", [["--gain", "drums"], ["--gain", "=-6"], ["--pan", "bass:1"]])
def test_a_level_without_stem_and_value_is_bad_usage(bad, capsys):
    assert cli.main(["mix", "JOBID123", "--url", "http://127.0.0.1:9", *bad]) == cli.EXIT_USAGE
    assert "write STEM=VALUE" in capsys.readouterr().err


def test_the_file_is_named_as_the_gateway_says():
    class Answer:
        headers = {"content-disposition": 'attachment; filename="my_song_mix.mp3"'}

    assert attachment_name(Answer()) == "my_song_mix.mp3"
    Answer.headers = {"content-disposition": 'attachment; filename="../../etc/x.wav"'}
    assert attachment_name(Answer()) == "x.wav"  # never outside the current folder
