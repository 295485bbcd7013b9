import pytest

from common.errors import ModelUnavailable
from common.interfaces import SeparatorInfo
from common.redact import server_paths, without_paths
from gateway.messages import public_model, result_notice, weights_state
from gateway.options import parse_options, resolve_options

MODELS = "/srv/audiosplit/models"
OFFLINE = (
    f"htdemucs: weights not found. Expected 955717e8-8726e21a.th in {MODELS}/torch/hub/"
    "checkpoints/ (or the Hugging Face cache of facebook/htdemucs under "
    f"{MODELS}/huggingface/hub). Run `./run.sh fetch-models htdemucs` where the network "
    "allows, or copy the file(s) there. Not fetched: no network: neither huggingface.co nor "
    "dl.fbaipublicfiles.com answered within 3 s."
)


def info(name, available=False, fetchable=False, reason=OFFLINE):
    return SeparatorInfo(
        name=name,
        family="dsp" if name == "dsp" else "demucs",
        stems=["vocals", "drums", "bass", "other"],
        available=available,
        fetchable=fetchable,
        reason=reason if name != "dsp" else "embedded signal-processing separator",
        segment=100,
        overlap=0.25,
        normalise=name != "dsp",
    )


@pytest.mark.parametrize("model", ["dsp", "htdemucs,dsp", "dsp,umxhq"])
def test_a_dsp_result_carries_the_notice_with_the_measured_figure(model):
    notice = result_notice(model)
    assert notice is not None and "lassical-DSP stems" in notice
    assert "2.3 dB" in notice and "9.0 dB for htdemucs" in notice  # measured vs published
    assert "./run.sh fetch-models" in notice and "models/README.md" in notice
    assert notice.count(". ") == 0 and len(notice) < 400  # one sentence


@pytest.mark.parametrize("model", ["htdemucs", "htdemucs_ft,umxhq", "", "dspx"])
def test_other_results_carry_none(model):
    assert result_notice(model) is None


def test_auto_falling_back_to_dsp_says_why_in_one_pathless_line():
    infos = {"htdemucs": info("htdemucs"), "dsp": info("dsp", available=True)}
    r = resolve_options(parse_options({}), infos)
    assert r.model_reason == (
        "model=auto: dsp, because htdemucs's weights are missing and there is no network to "
        "fetch them"
    )


def test_auto_picking_a_fetchable_model_says_it_downloads_on_first_use():
    infos = {"htdemucs": info("htdemucs", fetchable=True), "dsp": info("dsp", available=True)}
    r = resolve_options(parse_options({}), infos)
    assert r.model == "htdemucs"
    assert r.model_reason == (
        "model=auto: htdemucs (weights not here yet: downloaded on first use)"
    )


def test_auto_names_a_quality_other_than_the_default():
    infos = {n: info(n) for n in ("htdemucs_ft", "htdemucs")}
    infos["dsp"] = info("dsp", available=True)
    r = resolve_options(parse_options({"quality": "render"}), infos)
    assert r.model_reason.startswith("model=auto, quality=render: dsp, because htdemucs_ft's")


def test_a_named_model_without_weights_is_refused_without_paths():
    infos = {"htdemucs": info("htdemucs"), "dsp": info("dsp", available=True)}
    with pytest.raises(ModelUnavailable) as refused:
        resolve_options(parse_options({"model": "htdemucs"}), infos)
    message = refused.value.message
    assert MODELS not in message and "./run.sh fetch-models htdemucs" in message
    assert "no network" in message


def test_an_ensemble_member_without_weights_is_refused_without_paths():
    infos = {"htdemucs": info("htdemucs"), "dsp": info("dsp", available=True)}
    with pytest.raises(ModelUnavailable) as refused:
        resolve_options(parse_options({"model": "htdemucs,dsp"}), infos)
    assert MODELS not in refused.value.message and "htdemucs" in refused.value.message


@pytest.mark.parametrize(
    "reason, words",
    [
        ("… Not fetched: fetching on first use is off (AUTO_FETCH=false).", "AUTO_FETCH=false"),
        ("… Not fetched: the hubs are switched off (HF_HUB_OFFLINE=1).", "HF_HUB_OFFLINE=1"),
        ("mel: not found: expected x.ckpt in /srv/m/roformer/.", "not fetched automatically"),
    ],
)
def test_weights_state_names_why_not_fetched(reason, words):
    state = weights_state(info("htdemucs", reason=reason))
    assert words in state and "/srv" not in state


def test_api_models_entries_keep_every_field_but_the_path():
    entry = public_model(info("htdemucs"))
    assert entry["reason"] == (
        "weights missing and there is no network to fetch them; an admin can run "
        "./run.sh fetch-models htdemucs"
    )
    assert public_model(info("htdemucs", available=True))["reason"] == "weights present"
    assert entry["name"] == "htdemucs" and entry["available"] is False and "version" not in entry


def test_without_paths_replaces_the_server_dirs_and_what_follows():
    paths = server_paths(MODELS, "/srv/audiosplit/data", None)
    text = without_paths(f"write to {MODELS}/torch/x.th failed ('/srv/audiosplit/data/j')", paths)
    assert text == "write to <server path> failed ('<server path>')"
    assert without_paths("GET /api/jobs/abc", paths) == "GET /api/jobs/abc"
