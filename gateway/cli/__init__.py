"""`audiosplit`: separate songs with an audiosplit gateway and look after its jobs.

    audiosplit separate FILE|URL... [options]   upload, follow the jobs, write the stems
    audiosplit status ID | list | delete ID... | cancel ID... | models
    audiosplit mix ID [--speed X] [--semitones N] [--mute STEM] [--gain STEM=DB] [-o FILE]
    audiosplit keys create NAME | list | revoke NAME   (on a server host)

The gateway is at `--url` (env AUDIOSPLIT_URL, else http://127.0.0.1:8000); an API key, when
the gateway needs one, comes from env AUDIOSPLIT_API_KEY. Exit status: 0 all done, 1 a job
failed or the gateway refused a request, 2 bad usage, 3 the gateway cannot be reached,
130 interrupted.

This package: `api` (the gateway client, errors, exit statuses), `separate` (the `separate`
command; `songs` its files and links), `jobs` (status, list, delete, cancel, models), `mix`
(a job's stems mixed, stretched, transposed); here the command line and `main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.constants import CLIP_MODES, MODEL_NAMES, RESULT_FORMATS
from common.interfaces import ENSEMBLE_METHODS
from gateway.chains import RECIPES
from gateway.cli.api import (
    API_KEY_ENV,
    API_KEY_HEADER,
    DEFAULT_URL,
    DEFAULT_WAIT_S,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    PORT_ENV,
    UP_HINT,
    URL_ENV,
    Api,
    Refused,
    Unreachable,
    UsageError,
    default_url,
    error_message,
    no_job,
)
from gateway.cli.jobs import run_cancel, run_delete, run_list, run_models, run_status
from gateway.cli.keys import add_parser as add_keys_parser
from gateway.cli.mix import add_parser as add_mix_parser
from gateway.cli.separate import extension, out_dirs, run_separate
from gateway.cli.songs import song_source

__all__ = [
    "API_KEY_ENV",
    "API_KEY_HEADER",
    "DEFAULT_URL",
    "DEFAULT_WAIT_S",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "FORMAT_HELP",
    "UP_HINT",
    "URL_ENV",
    "Api",
    "Refused",
    "Unreachable",
    "UsageError",
    "build_parser",
    "error_message",
    "extension",
    "main",
    "no_job",
    "out_dirs",
]

FORMAT_HELP = {
    "wav": "32-bit float WAV (every value kept, never clips)",
    "wav16": "16-bit PCM WAV",
    "wav24": "24-bit PCM WAV",
    "flac": "24-bit FLAC (lossless)",
    "flac16": "16-bit FLAC",
    "mp3": "MP3 at 320 kbit/s",
}


def model_choice(value: str) -> str:
    """auto, a model name, or a comma-separated ensemble of names (argparse's type check)."""
    names = [n.strip() for n in value.split(",")]
    if value != "auto" and any(n not in MODEL_NAMES for n in names):
        raise argparse.ArgumentTypeError(
            f"{value!r}: choose auto, one of {', '.join(MODEL_NAMES)}, or several of them "
            "separated by commas"
        )
    return ",".join(names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiosplit",
        description="Separate songs into stems with an audiosplit gateway, and manage its jobs.",
        epilog=f"Environment: {URL_ENV} (the gateway's URL), {API_KEY_ENV} (sent as "
        f"{API_KEY_HEADER} when the gateway needs a key). Exit status: 0 all done, 1 a job "
        "failed or a request was refused, 2 bad usage, 3 the gateway cannot be reached, "
        "130 interrupted.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=default_url(),
        help=f"the gateway (default: env {URL_ENV}, else http://127.0.0.1:${PORT_ENV}, else "
        f"{DEFAULT_URL})",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", help="print the JSON the gateway sent instead of text"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sep = commands.add_parser(
        "separate",
        parents=[common],
        help="upload songs, follow their jobs, write their stems",
        description="Upload each FILE (or have the gateway fetch each URL), show its job's "
        "progress and write its stems to DIR/<song name>/<stem>.<ext> (DIR: --out; a URL's "
        "song name is its title), the analysis (analysis.json) beside them.",
    )
    sep.add_argument(
        "files",
        nargs="+",
        type=song_source,
        metavar="FILE|URL",
        help="audio files (any format ffmpeg decodes), relative to this folder, or links "
        "(http:// or https://) to songs: a direct media link or a page yt-dlp reads (YouTube, "
        "SoundCloud, Bandcamp)",
    )
    sep.add_argument(
        "--model",
        default="auto",
        type=model_choice,
        metavar="MODEL",
        help=f"the separator: auto (the best one whose weights the stack has, for --quality), "
        f"one of {', '.join(MODEL_NAMES)}, or an ensemble of 2-4 of them, e.g. htdemucs,umxhq "
        "(per stem the weighted average of their waveforms) (default: auto)",
    )
    sep.add_argument(
        "--ensemble-weights",
        metavar="W1,W2",
        help="with an ensemble --model: each member's weight, e.g. 2,1 (default: equal)",
    )
    sep.add_argument(
        "--ensemble-method",
        choices=ENSEMBLE_METHODS,
        help="with an ensemble --model: per stem the weighted mean of the members' waveforms "
        "(avg_wave) or their weighted median (median_wave) (default: avg_wave)",
    )
    sep.add_argument(
        "--chain",
        action="append",
        metavar="STEM>MODEL",
        help="separate a stem again with a second model, e.g. vocals>mel_band_roformer_karaoke; "
        "its parts replace it, named <stem>-<part> (repeatable; default: none)",
    )
    sep.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="a named first stage and chain: "
        + "; ".join(f"{name}: {r.label}" for name, r in RECIPES.items())
        + " (--model replaces the recipe's first stage; default: none)",
    )
    sep.add_argument(
        "--quality",
        default="preview",
        choices=("preview", "render"),
        help="with --model auto: preview runs htdemucs without shifts (fast), "
        "render htdemucs_ft with one shift (slow, best) (default: preview)",
    )
    sep.add_argument(
        "--stems",
        default="all",
        metavar="STEMS",
        help="all, or one stem (vocals, drums, bass, other; guitar, piano with "
        "htdemucs_6s) to get it and the rest as no_<stem> (default: all)",
    )
    formats = "; ".join(f"{f}: {FORMAT_HELP.get(f, f)}" for f in RESULT_FORMATS)
    sep.add_argument(
        "--format",
        default="wav",
        choices=RESULT_FORMATS,
        help=f"the stems' file format: {formats} (default: wav)",
    )
    sep.add_argument(
        "--clip",
        choices=CLIP_MODES,
        help="how formats other than float wav keep samples beyond full scale: "
        "rescale scales the whole set of stems so the loudest sample fits (as "
        "Demucs does), clamp cuts each sample at full scale; float wav never "
        "clips (default: the gateway's, rescale)",
    )
    sep.add_argument(
        "--no-analysis",
        action="store_true",
        help="skip the analysis (key, tempo, beats, chords, instruments): faster "
        "(default: analyse)",
    )
    sep.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for the stems, one subfolder per song (default: the current folder)",
    )
    sep.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="how long to keep retrying when the gateway stops answering, e.g. "
        f"while it restarts (default: {DEFAULT_WAIT_S:.0f})",
    )
    sep.add_argument(
        "--callback-url",
        metavar="URL",
        help="the gateway POSTs each job's JSON here when it ends (done, failed, cancelled) "
        "(default: none, or the key's own webhook)",
    )
    sep.add_argument(
        "--start-stack",
        action="store_true",
        help="when nothing answers at --url (a local one), start a temporary "
        "stack for this run and stop it afterwards (default: off)",
    )
    sep.set_defaults(run=run_separate)

    status = commands.add_parser(
        "status",
        parents=[common, as_json],
        help="one job's state",
        description="Show one job's fields (exit 1 if it failed).",
    )
    status.add_argument("id", metavar="ID", help="the job's id")
    status.set_defaults(run=run_status)

    listing = commands.add_parser(
        "list",
        parents=[common, as_json],
        help="the jobs, newest first",
        description="List the gateway's jobs, newest first.",
    )
    listing.add_argument(
        "--status",
        choices=("queued", "running", "done", "failed", "cancelled"),
        help="only jobs with this status (default: all)",
    )
    listing.add_argument(
        "--limit", type=int, default=20, metavar="N", help="at most N jobs, 1 to 500 (default: 20)"
    )
    listing.set_defaults(run=run_list)

    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete jobs and their files",
        description="Delete jobs and their files from the gateway.",
    )
    delete.add_argument("ids", nargs="+", metavar="ID", help="the jobs' ids")
    delete.set_defaults(run=run_delete)

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel queued or running jobs",
        description="Cancel queued or running jobs: they stop, their files are deleted.",
    )
    cancel.add_argument("ids", nargs="+", metavar="ID", help="the jobs' ids")
    cancel.set_defaults(run=run_cancel)

    models = commands.add_parser(
        "models",
        parents=[common, as_json],
        help="the separators and whether their weights are here",
        description="List the gateway's separators: their stems, whether their weights are "
        "here, their size and speed, in a table that fits 100 columns.",
    )
    models.add_argument(
        "--long",
        action="store_true",
        help="every column: also the published SDR, the licence and the reason, as wide as "
        "it takes (default: the compact table)",
    )
    models.set_defaults(run=run_models)
    add_mix_parser(commands, [common])
    add_keys_parser(commands)
    return parser


ID_COMMANDS = ("status", "delete", "cancel")


def ids_as_operands(argv: list[str]) -> list[str]:
    """`status -m9dT…`: a job id may open with '-' (ids made before that was ruled out), which
    argparse reads as an unknown option; such ids are moved after `--`, where they are operands."""
    if not argv or argv[0] not in ID_COMMANDS or "--" in argv:
        return argv
    known = {"-h", "--help", "--url", "--json"}
    dashed = [a for a in argv[1:] if a.startswith("-") and a not in known and "=" not in a]
    if not dashed:
        return argv
    return [a for a in argv if a not in dashed] + ["--", *dashed]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(ids_as_operands(argv))
    try:
        return args.run(args)
    except UsageError as e:
        sys.stderr.write(f"audiosplit: {e}\n")
        return EXIT_USAGE
    except Unreachable as e:
        hint = "" if "run.sh up" in str(e) or "--start-stack" in str(e) else f"; {UP_HINT}"
        sys.stderr.write(f"audiosplit: {e}{hint}\n")
        return EXIT_UNREACHABLE
    except Refused as e:
        sys.stderr.write(f"audiosplit: {e.message}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("audiosplit: interrupted\n")
        return EXIT_INTERRUPTED
