"""common/storage.py: the same cases on local disk and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from common.errors import StorageError
from common.s3local import LocalS3
from common.storage import LocalStorage, S3Storage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalStorage(tmp_path)
    server: LocalS3 = request.getfixturevalue("s3server")
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    return S3Storage(request.getfixturevalue("s3_url"), server.endpoint_url, retry_s=5)


def test_put_get_size_exists(storage):
    storage.put_bytes("jobs/a/x.bin", b"hello")
    assert storage.get_bytes("jobs/a/x.bin") == b"hello"
    assert storage.size("jobs/a/x.bin") == 5
    assert storage.exists("jobs/a/x.bin")
    assert not storage.exists("jobs/a/y.bin") and storage.size("jobs/a/y.bin") is None
    storage.put_bytes("jobs/a/x.bin", b"replaced")  # a second put replaces it whole
    assert storage.get_bytes("jobs/a/x.bin") == b"replaced"
    with pytest.raises(FileNotFoundError):
        storage.get_bytes("jobs/a/missing")


def test_read_range(storage):
    data = bytes(range(256)) * 40
    storage.put_bytes("r/data", data)
    assert storage.read_range("r/data", 0, 10) == data[:10]
    assert storage.read_range("r/data", 1000, 333) == data[1000:1333]
    assert storage.read_range("r/data", len(data) - 4, 100) == data[-4:]  # cut at the end
    assert storage.read_range("r/data", len(data) + 10, 5) == b""


def test_put_file_get_file(storage, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    storage.put_file("f/big.bin", src)
    assert storage.size("f/big.bin") == 3_000_000
    out = tmp_path / "down" / "big.bin"
    storage.get_file("f/big.bin", out)
    assert out.read_bytes() == src.read_bytes()


def test_list_delete_and_copy(storage):
    for name in ("jobs/a/1", "jobs/a/sub/2", "jobs/b/3"):
        storage.put_bytes(name, name.encode())
    assert storage.list_prefix("jobs/a") == ["jobs/a/1", "jobs/a/sub/2"]
    storage.copy("jobs/a/1", "jobs/c/1")
    assert storage.get_bytes("jobs/c/1") == b"jobs/a/1"
    storage.delete_prefix("jobs/a")
    assert storage.list_prefix("jobs/a") == []
    assert storage.list_prefix("jobs") == ["jobs/b/3", "jobs/c/1"]
    storage.delete_prefix("nothing/here")  # deleting what is not there is fine


def test_a_wav_is_read_in_place_through_the_seekable_file(storage, tmp_path):
    """libsndfile reads a WAV object (seeking to its frames) without a local copy."""
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((50_000, 4)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, 44100, "FLOAT", format="WAV")
    storage.put_bytes("w/result.wav", buf.getvalue())
    with storage.open("w/result.wav") as f, sf.SoundFile(f) as snd:
        assert (snd.frames, snd.channels) == (50_000, 4)
        snd.seek(31_000)
        assert np.array_equal(snd.read(7000, dtype="float32"), audio[31_000:38_000])
        snd.seek(0)
        assert np.array_equal(snd.read(dtype="float32"), audio)
    with pytest.raises(FileNotFoundError):
        storage.open("w/missing.wav")


def test_a_reader_never_sees_half_an_object(storage):
    """Objects replaced over and over while read: every read is one whole version."""
    versions = [bytes([v]) * 200_000 for v in range(8)]
    storage.put_bytes("atomic/x", versions[0])
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            storage.put_bytes("atomic/x", versions[i % len(versions)])

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(30):
            assert storage.get_bytes("atomic/x") in versions
    finally:
        stop.set()
        t.join()


def test_s3_unreachable_retries_then_names_the_endpoint(s3server, s3_url):
    """A stopped server: calls retry for retry_s, then fail with a StorageError naming it."""
    bad = S3Storage(s3_url, "http://127.0.0.1:9", retry_s=1.5)  # nothing listens on port 9
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:9.*unreachable"):
        bad.put_bytes("x", b"1")
    assert time.monotonic() - t0 >= 1.5


def call_errors(fn, *args) -> list[BaseException]:
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported to the test's thread
        return [e]
    return []


def test_s3_server_restart_is_waited_out(s3server, tmp_path, monkeypatch):
    """Killed and started again mid-call: the call retries and succeeds; objects persist."""
    server = LocalS3(tmp_path / "s3")  # its own server: the session's stays up
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    server.start()
    try:
        store = S3Storage(server.storage_url("p"), server.endpoint_url, retry_s=90)
        store.put_bytes("before", b"1")
        server.stop(kill=True)
        # the put waits in a thread; the server is started again from this one (the server
        # dies with the thread that started it: common/children.py)
        failed = []
        putter = threading.Thread(
            target=lambda: failed.extend(call_errors(store.put_bytes, "during", b"2"))
        )
        putter.start()  # refused at first, then accepted
        time.sleep(2.0)
        server.start()
        putter.join()
        assert not failed, failed
        assert store.get_bytes("before") == b"1" and store.get_bytes("during") == b"2"
    finally:
        server.stop(kill=True)
