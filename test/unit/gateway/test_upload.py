from gateway.upload import megabytes


def test_sizes_keep_the_tenth_that_matters():
    assert megabytes(2_600_000) == "2.6 MB"
    assert megabytes(20_000_000) == "20 MB"
    assert megabytes(500_000_000) == "500 MB"
    assert megabytes(99_950_000) == "100 MB"


def upload_app(tmp_path):
    """A route that only receives the upload, its errors answered as the gateway answers."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from common.errors import AudiosplitError
    from gateway.upload import receive_upload

    app = FastAPI()

    @app.exception_handler(AudiosplitError)
    async def on_error(request, exc: AudiosplitError):
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    @app.post("/up")
    async def up(request: Request):
        upload = await receive_upload(request, tmp_path / "upload", 10_000_000)
        return {"filename": upload.filename, "size": upload.size, "fields": upload.fields}

    return app


def test_a_file_under_another_field_is_told_where_it_goes(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(upload_app(tmp_path)) as client:
        song = ("song.wav", b"RIFF" + b"\0" * 10_000, "audio/wav")
        answer = client.post("/up", files={"audio": song})
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "code": "wrong_field",
        "message": "the song goes in form field 'file' (got a file in 'audio')",
    }


def test_the_file_field_is_the_song_with_or_without_a_file_name(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(upload_app(tmp_path)) as client:
        named = client.post("/up", files={"file": ("a.wav", b"x" * 5000)}, data={"model": "dsp"})
        bare = client.post("/up", files={"file": (None, b"y" * 5000)})  # curl -F file=<a.wav
    assert named.json() == {"filename": "a.wav", "size": 5000, "fields": {"model": "dsp"}}
    assert bare.json() == {"filename": "", "size": 5000, "fields": {}}
