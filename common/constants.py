"""Constants with their units, in one place."""

SAMPLE_RATE = 44100  # Hz: every service works on 44.1 kHz float32 stereo
CHANNELS = 2  # stereo, [L, R]
WIRE_DTYPE = "<f4"  # little-endian float32 on the wire and on disk

MAX_UPLOAD_BYTES = 500 * 1024 * 1024  # 500 MB
MAX_DURATION_S = 20 * 60.0  # 20 minutes of audio
MIN_DURATION_S = 0.1  # 100 ms: shorter uploads carry nothing to separate

# Analysis windows are AST's input length: 1024 frames of 10 ms = 10.24 s (451584 samples).
ANALYSIS_WINDOW = 451584  # samples at 44.1 kHz
ANALYSIS_WINDOW_S = ANALYSIS_WINDOW / SAMPLE_RATE  # 10.24 s
# The track-level series (chroma, onset strength) live on one frame grid: a frame every
# ANALYSIS_FRAME_HOP samples at 44.1 kHz (512 at librosa's 22.05 kHz: 23.2 ms). Window starts
# and hops are multiples of it, so a window's frames are the track's frames.
ANALYSIS_FRAME_HOP = 1024  # samples at 44.1 kHz
ANALYSIS_RATE = 22050  # Hz: chroma and onsets are computed at librosa's default rate
# Real audio sent on each side of a window for the series, so that its frames equal the whole
# track's: the longest CQT filter of the chroma (C1, 36 bins an octave) reaches 0.8 s either
# way, over a harmonic part whose median filter (HPSS, 11 frames) and STFT reach 0.18 s more.
ANALYSIS_CONTEXT = 48 * ANALYSIS_FRAME_HOP  # samples (1.11 s)
LOUDNESS_STEP = 4410  # samples (100 ms): BS.1770's gating blocks (400 ms) start every 100 ms
AST_SAMPLE_RATE = 16000  # Hz: the AST feature extractor's rate
AST_MODEL_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"

DSP_STEMS = ("vocals", "drums", "bass", "other")

MODEL_NAMES = (
    "htdemucs",
    "htdemucs_ft",
    "htdemucs_6s",
    "hdemucs_mmi",
    "mdx_extra",
    "umxhq",
    "umxl",
    "umx",
    "bs_roformer_viperx",
    "mel_band_roformer_kj",
    "bs_roformer_musdb18",
    "mel_band_roformer_musdb18",
    "mel_band_roformer_karaoke",
    "mel_band_roformer_dereverb",
    "mel_band_roformer_denoise",
    "bs_roformer_sw",
    "mdx23c_drumsep",
    "scnet_xl_ihf",
    "dsp",
)
# model=auto, per quality: the first of these whose weights are present or can be fetched now
AUTO_CHAIN = {"preview": ("htdemucs", "dsp"), "render": ("htdemucs_ft", "htdemucs", "dsp")}

# wav: 32-bit float (every value kept); wav16, wav24: PCM; flac: 24-bit, flac16: 16-bit;
# mp3: 320 kbit/s CBR (LAME).
RESULT_FORMATS = ("wav", "wav16", "wav24", "flac", "flac16", "mp3")
# How the formats that cannot hold values beyond full scale (all but wav) treat them:
# rescale (default) scales the job's whole set of stems so its loudest sample fits, as Demucs'
# --clip-mode rescale does; clamp cuts each sample at ±1.0.
CLIP_MODES = ("rescale", "clamp")
