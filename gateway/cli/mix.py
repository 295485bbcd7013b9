"""`audiosplit mix ID`: a done job's stems mixed, stretched and transposed by the gateway
(GET /api/jobs/{id}/mix), written to a file.

    audiosplit mix ID --speed 0.8 --semitones -2 --mute vocals --gain drums=-6 --format mp3 -o FILE
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from common.constants import RESULT_FORMATS
from gateway.cli.api import EXIT_OK, Api, UsageError, attachment_name


def add_parser(commands, parents: list[argparse.ArgumentParser]) -> None:
    mix = commands.add_parser(
        "mix",
        parents=parents,
        help="a done job's stems mixed, slowed down or sped up, transposed, as one file",
        description="Have the gateway mix a done job's stems (each at its gain, muted ones "
        "left out), play it at --speed without changing the pitch and shift it by "
        "--semitones without changing the tempo (Rubber Band), and write the file. The "
        "gateway keeps each mix it made, so asking again is quick.",
    )
    mix.add_argument("id", metavar="ID", help="the job's id")
    mix.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="tempo factor, 0.5 to 1.5: 0.8 plays at 80 %% (default: 1)",
    )
    mix.add_argument(
        "--semitones",
        type=float,
        default=0.0,
        metavar="N",
        help="transpose by N semitones, -12 to 12, fractions too (default: 0)",
    )
    mix.add_argument(
        "--mute",
        action="append",
        default=[],
        metavar="STEM",
        help="leave this stem out (again for more), e.g. --mute vocals (default: none)",
    )
    mix.add_argument(
        "--gain",
        action="append",
        default=[],
        metavar="STEM=DB",
        help="this stem's level in dB, -60 to 24 (again for more), e.g. --gain drums=-6 "
        "(default: 0 for every stem)",
    )
    mix.add_argument(
        "--pan",
        action="append",
        default=[],
        metavar="STEM=P",
        help="this stem's balance, -1 (left) to 1 (right), e.g. --pan bass=-0.5 (default: 0, "
        "as separated)",
    )
    mix.add_argument(
        "--format",
        default="wav",
        choices=RESULT_FORMATS,
        help="the file's format, as for `separate` (default: wav, 32-bit float)",
    )
    mix.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="FILE",
        help="where to write it (default: the name the gateway gives, e.g. song_mix.mp3, "
        "in the current folder)",
    )
    mix.set_defaults(run=run_mix)


def levels(pairs: list[str], option: str) -> list[tuple[str, str]]:
    """['drums=-6'] -> [('drums', '-6')]; UsageError for an item without `=`."""
    found = []
    for pair in pairs:
        stem, sep, value = pair.partition("=")
        if not sep or not stem.strip() or not value.strip():
            raise UsageError(f"{option} {pair!r}: write STEM=VALUE, e.g. {option} drums=-6")
        found.append((stem.strip(), value.strip()))
    return found


def mix_params(args: argparse.Namespace) -> dict[str, str]:
    """The query of GET /mix from the command line: --mute and --gain as `gains`."""
    gains = [(stem, "-inf") for stem in args.mute] + levels(args.gain, "--gain")
    if not all(math.isfinite(v) for v in (args.speed, args.semitones)):
        raise UsageError("--speed and --semitones take numbers")
    params = {"speed": repr(args.speed), "semitones": repr(args.semitones), "format": args.format}
    if gains:
        params["gains"] = ",".join(f"{stem}:{db}" for stem, db in gains)
    if args.pan:
        params["pan"] = ",".join(f"{stem}:{p}" for stem, p in levels(args.pan, "--pan"))
    return params


def run_mix(args: argparse.Namespace) -> int:
    params = mix_params(args)
    api = Api(args.url)
    try:
        target = download_mix(api, args.id, params, args.out)
    finally:
        api.close()
    sys.stdout.write(f"{target}\n")
    return EXIT_OK


def download_mix(api: Api, job_id: str, params: dict[str, str], out: Path | None) -> Path:
    """The mix saved to `out`, or under the gateway's name in the current folder."""
    fallback = f"{job_id}_mix.{params['format'].rstrip('0123456789')}"  # wav16: .wav
    return api.save(
        f"/api/jobs/{job_id}/mix",
        params,
        lambda response: out or Path(attachment_name(response) or fallback),
    )
