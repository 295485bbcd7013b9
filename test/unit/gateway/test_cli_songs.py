"""`audiosplit separate`'s songs (gateway/cli/songs.py): files and links, and their folders."""

from pathlib import Path

import pytest

from gateway import cli
from gateway.cli.separate import plain_step
from gateway.cli.songs import Song, folder_name, link_dir, song_source


@pytest.mark.parametrize(
    "arg, link",
    [
        ("https://www.youtube.com/watch?v=abc", True),
        ("HTTP://127.0.0.1:8080/song.wav", True),
        ("song.wav", False),
        ("http.wav", False),  # a file whose name opens with "http"
        ("folder/https://x.wav", False),
    ],
)
def test_a_link_is_an_argument_that_opens_with_http_or_https(arg, link):
    assert isinstance(song_source(arg), str if link else Path)


def test_files_and_links_mix_in_one_run():
    args = cli.build_parser().parse_args(
        ["separate", "a.wav", "https://host/x.mp3", "b.flac", "--callback-url", "https://cb/"]
    )
    assert args.files == [Path("a.wav"), "https://host/x.mp3", Path("b.flac")]
    assert args.callback_url == "https://cb/"


def test_a_link_is_shown_without_its_scheme_and_cut_until_its_title_is_known():
    assert Song("https://host/song.wav", None).name == "host/song.wav"
    long = Song("https://www.youtube.com/watch?v=" + "x" * 80, None).name
    assert len(long) == 48 and long.endswith("…")
    assert Song(Path("in/a song.wav"), Path("a song")).name == "a song.wav"


def test_every_song_has_its_own_idempotency_key():
    keys = {Song("https://host/a", None).idempotency_key for _ in range(3)}
    assert len(keys) == 3


@pytest.mark.parametrize(
    "title, folder",
    [
        ("AC/DC: Back in Black", "AC DC Back in Black"),
        ("..", "audio"),
        ("  .hidden  ", "hidden"),
        ('a\\b\tc"d', "a b c d"),
        ("Ünïcödé – ok", "Ünïcödé – ok"),
        ("x" * 300, "x" * 100),
    ],
)
def test_a_title_becomes_one_safe_folder_name(title, folder):
    assert folder_name(title) == folder


def test_a_links_folder_is_its_title_else_its_file_name_and_never_another_songs(tmp_path):
    file_song = Song(Path("Song.wav"), tmp_path / "Song")
    titled = Song("https://host/a", None, job={"title": "Song", "filename": "Song"})
    songs = [file_song, titled]
    titled.out_dir = link_dir(titled, songs, tmp_path)
    assert titled.out_dir == tmp_path / "Song-2"
    untitled = Song("https://host/b.wav", None, job={"title": None, "filename": "b.wav"})
    assert link_dir(untitled, [*songs, untitled], tmp_path) == tmp_path / "b"


@pytest.mark.parametrize(
    "stage, step",
    [
        ("fetching", "fetching"),
        ("fetching (0.4 of 5.0 MB)", "fetching"),  # as the stage before: no second line
        ("fetching (2.6 of 5.0 MB)", "fetching 5"),
        ("fetching (1.2 MB so far)", "fetching"),
        ("downloading model (0.0 of 80.0 MB)", "downloading model"),
        ("downloading model (40.0 of 80.0 MB)", "downloading model 5"),
        ("separating", "separating"),
    ],
)
def test_a_fetch_is_said_at_each_tenth_without_a_terminal(stage, step):
    assert plain_step(stage) == step
