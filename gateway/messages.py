"""What the gateway tells its clients about models, in one place: the notice a `dsp` result
carries and the one-line reason for the model that ran, both without server paths
(`common.redact` keeps them out of everything else a client reads).

Full reasons (with the server's file paths) are for the gateway's log; the API, the page and
the CLI get short, pathless sentences built from the same facts.
"""

from __future__ import annotations

from common.interfaces import SeparatorInfo

# Measured with `.venv/bin/python bench/bench_dsp.py` on falcon69 (a real song's 6 s excerpt
# with its true stems, ../shared/testdata): simple SDR in dB, vocals 2.25, mean of the four
# stems 4.06 (README, Figures). htdemucs: Demucs v4's README, 9.00 dB on MUSDB18-HQ's test set,
# mean of the four stems (published, not measured here: no weights on the development machine).
DSP_VOCALS_SDR_DB = 2.3
DSP_MEAN_SDR_DB = 4.1
HTDEMUCS_PUBLISHED_SDR_DB = 9.0
DSP_NOTICE = (
    "{what} (`dsp`, no trained model), far below the neural models: "
    f"{DSP_MEAN_SDR_DB:.1f} dB SDR over the four stems of a real test song "
    f"(vocals {DSP_VOCALS_SDR_DB:.1f} dB); "
    f"Demucs publishes {HTDEMUCS_PUBLISHED_SDR_DB:.1f} dB for htdemucs (MUSDB18-HQ); "
    "for real stems, run `./run.sh fetch-models` online, or copy weights into models/ "
    "(models/README.md)."
)


def result_notice(model: str) -> str | None:
    """The one sentence about a whole result a person must not miss, or None. Its clauses end
    in ": " or "; " (a client may put each on a line of its own).

    `model`: the job's model as it ran ("dsp", "htdemucs", or an ensemble "htdemucs,dsp").
    """
    members = [m.strip() for m in model.split(",") if m.strip()]
    if "dsp" not in members:
        return None
    what = "Classical-DSP stems" if len(members) == 1 else "Partly classical-DSP stems"
    return DSP_NOTICE.format(what=what)


def weights_state(info: SeparatorInfo, plural: bool = False) -> str:
    """A model's weights in a few words, without paths: "weights present", "weights are
    missing and …" (`plural`: phrased to follow "htdemucs's")."""
    are = "are " if plural else ""
    if info.family == "dsp":
        return "needs no weights"
    if info.available:
        return f"weights {are}present"
    if info.fetchable:
        return f"weights {are}not here yet: downloaded on first use"
    return f"weights {are}missing and {why_not_fetched(info.reason)}"


def why_not_fetched(reason: str) -> str:
    """Why the predictor will not fetch missing weights, from its full reason, in words."""
    if "AUTO_FETCH=false" in reason:
        return "fetching is off (AUTO_FETCH=false)"
    if "HF_HUB_OFFLINE" in reason:
        return "the hubs are switched off (HF_HUB_OFFLINE=1)"
    if "no network" in reason:
        return "there is no network to fetch them"
    return "not fetched automatically"


def auto_reason(quality: str, chosen: SeparatorInfo, skipped: list[SeparatorInfo]) -> str:
    """`model_reason` for model=auto, one line: which model, and why the better ones were
    passed over ("model=auto: dsp, because htdemucs's weights are missing and there is no
    network to fetch them"); the quality is named when it is not the default."""
    head = "model=auto" + ("" if quality == "preview" else f", quality={quality}")
    head = f"{head}: {chosen.name}"
    if not skipped:
        return f"{head} ({weights_state(chosen)})"
    why = "; ".join(f"{i.name}'s {weights_state(i, plural=True)}" for i in skipped)
    return f"{head}, because {why}"


def unavailable_message(info: SeparatorInfo) -> str:
    """The 422 for a model asked for by name whose weights cannot be had: what to do."""
    return (
        f"model {info.name} cannot run here: its {weights_state(info, plural=True)}; the server's "
        f"admin can run `./run.sh fetch-models {info.name}` on a machine with a network, or put "
        "its weights under models/ (see models/README.md)"
    )


def public_model(info: SeparatorInfo) -> dict:
    """`GET /api/models`' entry of one model: the predictor's facts, its reason pathless."""
    entry = info.model_dump(exclude={"version"})
    entry["reason"] = weights_state(info)
    if not (info.available or info.fetchable):
        entry["reason"] += f"; an admin can run ./run.sh fetch-models {info.name}"
    return entry
