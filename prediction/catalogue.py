"""What is published and measured about each model, for `GET /api/models` and the README.

Published SDR figures are the publishers' own (source named beside each), not measured here:
the development machine cannot download weights. Parameter counts were taken on the
architectures as `demucs` and `openunmix` build them (`HTDemucs(sources=…)`; `OpenUnmix` with
hidden size 512, or 1024 for umxl, one per target); `weights_mb` is their float32 size.
Speeds are real-time factors of the predictor's own separation time on the 2-core development
CPU (`./run.sh bench bench_predictor`), None where not measured.
"""

from __future__ import annotations

from common.interfaces import ModelCard

DEMUCS_README = "Demucs v4 README (facebookresearch/demucs)"
UMX_README = "open-unmix README (sigsep/open-unmix-pytorch), median of frames, median of tracks"
DEMUCS_WEIGHTS = "not stated (code MIT; trained on MUSDB18-HQ + 800 songs)"
HTDEMUCS_PARAMS = 26.90  # millions
UMX_PARAMS = 4 * 8.89  # four targets
UMXL_PARAMS = 4 * 28.26
MEL_384_6_PARAMS = 228.20  # MSST's Mel-Band RoFormer of the karaoke/de-reverb/de-noise configs


def _card(params_m: float | None, **kw) -> ModelCard:
    weights_mb = round(params_m * 4, 1) if params_m is not None else None
    return ModelCard(parameters_m=params_m, weights_mb=weights_mb, **kw)


CARDS: dict[str, ModelCard] = {
    "htdemucs": _card(
        HTDEMUCS_PARAMS,
        published_sdr="9.00 dB mean of 4 stems, MUSDB18-HQ test",
        sdr_source=DEMUCS_README,
        licence=DEMUCS_WEIGHTS,
        rtf_cpu=0.902,
        rtf_note="eager, 30 s of music, nothing else running (2026-12-02); 0.855 with the "
        "compiled core (COMPILE_MODELS=auto); demucs' own separate_tensor 1.016 and 1.056 in "
        "the same runs (./run.sh bench bench_predictor --seconds 30 --compile off|auto). An "
        "earlier, faster machine measured 0.404 eager and 0.331 compiled",
    ),
    "htdemucs_ft": _card(
        4 * HTDEMUCS_PARAMS,
        published_sdr="9.20 dB mean (with sparse attention; the released per-stem fine-tuned "
        "bag is 'a bit better' than htdemucs)",
        sdr_source=DEMUCS_README,
        licence=DEMUCS_WEIGHTS,
        rtf_note="a bag of four htdemucs: about 4 x htdemucs (not measured on its own)",
    ),
    "htdemucs_6s": _card(
        HTDEMUCS_PARAMS,
        published_sdr=None,
        sdr_source="Demucs v4 README: 'the piano source is not working great'",
        licence="not stated (trained on Meta's internal data)",
        rtf_note="same architecture as htdemucs, six sources",
    ),
    "hdemucs_mmi": _card(
        None,
        published_sdr="7.7 dB mean for Hybrid Demucs v3 trained on MUSDB only; this one adds "
        "800 songs",
        sdr_source=DEMUCS_README,
        licence=DEMUCS_WEIGHTS,
    ),
    "mdx_extra": _card(
        None,
        published_sdr=None,
        sdr_source="Demucs README: trained with the MUSDB test set (2nd in MDX 2021 track B), "
        "so no comparable test figure",
        licence="not stated",
    ),
    "umxl": _card(
        UMXL_PARAMS,
        published_sdr="vocals 7.21, drums 7.15, bass 6.02, other 4.89 dB",
        sdr_source=UMX_README,
        licence="CC BY-NC-SA 4.0: non-commercial use only",
    ),
    "umxhq": _card(
        UMX_PARAMS,
        published_sdr="vocals 6.25, drums 6.04, bass 5.07, other 4.28 dB",
        sdr_source=UMX_README,
        licence="MIT",
        rtf_cpu=0.399,
        rtf_note="four Open-Unmix targets with Wiener filtering, 30 s of music, nothing else "
        "running (2026-12-02; ./run.sh bench bench_predictor --seconds 30 --model umxhq)",
    ),
    "umx": _card(
        UMX_PARAMS,
        published_sdr="vocals 6.32, drums 5.73, bass 5.23, other 4.02 dB (trained on the "
        "16 kHz-band AAC MUSDB18)",
        sdr_source=UMX_README,
        licence="MIT",
        rtf_note="the same architecture and size as umxhq: about its speed (not measured)",
    ),
    # RoFormers: MSST's docs/pretrained_models.md; parameters counted on the package's network
    # for the published config (prediction/roformer_separator.py).
    "bs_roformer_viperx": _card(
        159.76,
        published_sdr="vocals 10.87 dB (Multisong dataset)",
        sdr_source="MSST docs/pretrained_models.md (ZFTurbo/Music-Source-Separation-Training)",
        licence="not stated",
        rtf_cpu=29.39,
        rtf_note="full size at random weights, 30 s of music (one job chunk: 8 s of context on "
        "each side weigh more than on a song), 2 torch threads, nothing else running, "
        "2026-12-02 (./run.sh bench bench_roformer --config viperx --seconds 30 "
        "--no-reference); peak 4.7 GB. Vocals + other (mix minus vocals)",
    ),
    "mel_band_roformer_kj": _card(
        None,
        published_sdr="vocals 10.98 dB (Multisong dataset)",
        sdr_source="MSST docs/pretrained_models.md (ZFTurbo/Music-Source-Separation-Training)",
        licence="not stated",
        rtf_note="vocals + other (mix minus vocals)",
    ),
    "bs_roformer_musdb18": _card(
        131.70,
        published_sdr="MUSDB18 test: avg 9.65 (bass 8.48, drums 11.61, vocals 11.08, other "
        "7.44 dB); Multisong avg 9.38",
        sdr_source="MSST docs/pretrained_models.md, 'Multi-stem models (MUSDB18HQ)': trained "
        "on MUSDB18-HQ only",
        licence="not stated",
        rtf_cpu=16.70,
        rtf_note="full size at random weights, 30 s of music (one job chunk: 11 s of context on "
        "each side weigh more than on a song), 2 torch threads, nothing else running, "
        "2026-12-02 (./run.sh bench bench_roformer --config bs_musdb18 --seconds 30 "
        "--no-reference); peak 5.6 GB. "
        "4 stems (drums, bass, other, vocals); config config_bs_roformer_384_8_2_485100"
        ".yaml: dim 384, depth 8, mask MLPs x2, 11 s chunks; parameters counted on that network "
        "as MSST's configs/sage/ variant of the same name gives it",
    ),
    "mel_band_roformer_musdb18": _card(
        58.33,
        published_sdr="MUSDB18 test: avg 8.22 dB (per stem not published)",
        sdr_source="MSST docs/mel_roformer_experiments.md: trained on MUSDB18-HQ only",
        licence="not stated",
        rtf_cpu=4.91,
        rtf_note="full size at random weights, 60 s of music, 2 torch threads, nothing else "
        "running, 2026-12-02 (./run.sh bench bench_roformer --config mel_musdb18 --seconds 60 "
        "--no-reference; 5.32 on 20 s); peak 4.2 GB. 4 stems (drums, bass, other, vocals); "
        "config model_mel_band_roformer_ep_1_sdr_8.2175.yaml: dim 256, depth 4, 60 mel bands, "
        "mask MLPs x1, 8 s chunks",
    ),
    # Lead/backing, de-reverb and de-noise share one network (MSST's Mel-Band RoFormer, dim 384,
    # depth 6, 60 mel bands, 8 s chunks); the SDR in a checkpoint's name is its author's
    # validation figure on data not published.
    "mel_band_roformer_karaoke": _card(
        MEL_384_6_PARAMS,
        published_sdr=None,
        sdr_source="no test figure in MSST's or audio-separator's lists; the checkpoint's name "
        "carries its authors' validation SDR 10.1956 (aufr33 & viperx; data not published)",
        licence="not stated",
        rtf_cpu=18.36,
        rtf_note="full size at random weights, 30 s of music (one job chunk: 8 s of context on "
        "each side), 2 torch threads, nothing else running, 2026-12-07 (./run.sh bench "
        "bench_roformer --config karaoke --seconds 30 --threads 2 --no-reference): 551 s; peak "
        "3.5 GB (64.5 measured earlier that day on a machine loaded to 5.7-9 by other work). "
        "Lead + backing vocals (the config's karaoke, the lead, and the residual), for a vocals "
        "stem: chain=vocals>mel_band_roformer_karaoke",
    ),
    "mel_band_roformer_dereverb": _card(
        MEL_384_6_PARAMS,
        published_sdr=None,
        sdr_source="MSST docs/pretrained_models.md lists it without a figure ('---'); the "
        "checkpoint's name carries its author's validation SDR 19.1729 (anvuew)",
        licence="not stated",
        rtf_note="dry + reverb (the config's noreverb and the residual); the same network as "
        "mel_band_roformer_karaoke, so about its speed",
    ),
    "mel_band_roformer_denoise": _card(
        MEL_384_6_PARAMS,
        published_sdr=None,
        sdr_source="MSST docs/pretrained_models.md lists it without a figure ('---'); the "
        "checkpoint's name carries its author's validation SDR 27.9959 (aufr33)",
        licence="not stated",
        rtf_note="clean + noise (the config's dry and the residual); the same network as "
        "mel_band_roformer_karaoke, so about its speed",
    ),
    "bs_roformer_sw": _card(
        174.66,
        published_sdr=None,
        sdr_source="not in MSST's list; audio-separator lists it without a figure; its trainer "
        "is not named (the uploader says he only renamed the keys)",
        licence="not stated",
        rtf_note="6 stems (bass, drums, other, vocals, guitar, piano); BS-RoFormer dim 256, "
        "depth 12, 62 bands, 13.4 s chunks",
    ),
    # MSST's own networks (the msst wheel, prediction/msst_separator.py); parameters counted on
    # the network of the published config.
    "mdx23c_drumsep": _card(
        109.38,
        published_sdr="DrumSep test: kick 14.54, snare 9.79, toms 10.63, hh 3.19, cymbals "
        "(ride + crash) 6.08 dB",
        sdr_source="MSST docs/pretrained_models.md, 'Multi-stem models' (aufr33 & jarredou's "
        "DrumSep test set)",
        licence="not stated",
        rtf_cpu=4.57,
        rtf_note="full size at random weights, 30 s of music, 2 torch threads, nothing else "
        "running, 2026-12-07 (./run.sh bench bench_msst --model mdx23c_drumsep --seconds 30 "
        "--no-reference): 137 s; one forward of a 3 s chunk 2.6 s; peak 1.7 GB (52.6 measured "
        "earlier that day on a machine loaded to 6-7 by other work). 6 drum parts (kick, snare, "
        "toms, hh, ride, crash) of a drums stem (chain=drums>mdx23c_drumsep); MDX23C (TFC-TDF "
        "v3), 128 channels, 5 scales, 3 s chunks, 4 x overlap",
    ),
    "scnet_xl_ihf": _card(
        53.47,
        published_sdr="MUSDB18 test: avg 10.08 (bass 9.23, drums 11.81, vocals 11.42, other "
        "7.88 dB); Multisong avg 9.92",
        sdr_source="MSST docs/pretrained_models.md, 'Multi-stem models (MUSDB18HQ)': trained "
        "on MUSDB18-HQ only",
        licence="not stated",
        rtf_cpu=12.01,
        rtf_note="full size at random weights, 30 s of music, 2 torch threads, nothing else "
        "running, 2026-12-07 (./run.sh bench bench_msst --model scnet_xl_ihf --seconds 30 "
        "--no-reference): 360 s through the job path; one forward of an 11 s chunk 24.9 s, "
        "and MSST's 4 x overlap runs each stretch of a song four times; peak 2.3 GB; "
        "its dual-path LSTMs take three quarters of the time. 4 stems (drums, bass, other, "
        "vocals); SCNet dims 4-64-128-256, 8 dual-path layers, 11 s chunks",
    ),
    "dsp": _card(
        None,
        published_sdr="vocals 2.25, drums 7.18, bass 4.10, other 2.71 dB on the falcon69 "
        "excerpt (not MUSDB; tuned on it)",
        sdr_source="this project (README, Figures: ./run.sh bench bench_dsp)",
        licence="MIT (this project; no weights)",
        rtf_cpu=0.048,
        rtf_note="a whole job through all six services, analysis=false",
    ),
}


# What a model is for, as `GET /api/models` groups them: task -> what a person asks for.
TASKS = {
    "four_stems": "4 stems (vocals, drums, bass, other)",
    "six_stems": "6 stems (adds guitar and piano)",
    "vocals": "vocals and the rest",
    "lead_backing": "lead and backing vocals",
    "drum_parts": "drum parts (kick, snare, toms, cymbals)",
    "dereverb": "without reverb",
    "denoise": "without noise",
}
TASK_OF = {
    **dict.fromkeys(("htdemucs", "htdemucs_ft", "hdemucs_mmi", "mdx_extra"), "four_stems"),
    **dict.fromkeys(("umxhq", "umxl", "umx", "dsp"), "four_stems"),
    **dict.fromkeys(("bs_roformer_musdb18", "mel_band_roformer_musdb18"), "four_stems"),
    "scnet_xl_ihf": "four_stems",
    "htdemucs_6s": "six_stems",
    "bs_roformer_sw": "six_stems",
    "bs_roformer_viperx": "vocals",
    "mel_band_roformer_kj": "vocals",
    "mel_band_roformer_karaoke": "lead_backing",
    "mdx23c_drumsep": "drum_parts",
    "mel_band_roformer_dereverb": "dereverb",
    "mel_band_roformer_denoise": "denoise",
}


def card_of(name: str) -> ModelCard | None:
    """The card of a registry name (its task set); None for a model named by a checkpoint's
    path."""
    card = CARDS.get(name)
    return card.model_copy(update={"task": TASK_OF.get(name)}) if card is not None else None
