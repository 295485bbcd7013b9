"""Constants with their units, in one place."""

SAMPLE_RATE = 44100  # Hz: every service works on 44.1 kHz float32 stereo
CHANNELS = 2  # stereo, [L, R]
WIRE_DTYPE = "<f4"  # little-endian float32 on the wire and on disk

MAX_UPLOAD_BYTES = 500 * 1024 * 1024  # 500 MB
MAX_DURATION_S = 20 * 60.0  # 20 minutes of audio
MIN_DURATION_S = 0.1  # 100 ms: shorter uploads carry nothing to separate

ANALYSIS_WINDOW_S = 10.0  # seconds of audio per analysis window
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
    "dsp",
)

RESULT_FORMATS = ("wav", "wav16", "wav24", "flac", "mp3")
