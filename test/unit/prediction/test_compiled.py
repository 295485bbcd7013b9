"""HTDemucs with a compiled core gives the eager result; a failed compile leaves it eager.

Compiling costs about half a minute per architecture on a cold cache, so the fast tests use a
tiny HTDemucs (every code path of the real one: both branches, the bottom 1x1 convolutions, a
classic and a cross transformer layer) compiled once per module, with inductor's cache kept in
pytest's cache dir: later runs take seconds. Real weights are not needed: the compiled code
is the same function of the weights.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from demucs.apply import BagOfModels
from demucs.htdemucs import HTDemucs

from prediction import compiled
from prediction.compiled import (
    CHECK_TOLERANCE,
    INDUCTOR_CACHE_ENV,
    CompiledHTDemucs,
    HTDemucsCore,
    compile_for_device,
    should_compile,
    use_inductor_cache,
)
from prediction.demucs_separator import DemucsSeparator
from test.separation_fixtures import FOUR, FULL, TOLERANCE, real_music, relative_error

# The real architecture at its smallest that still has every part; a 1 s training length
# gives the same kernels as 7.8 s and quicker forwards.
TINY = {
    "channels": 4,
    "depth": 4,
    "t_layers": 2,
    "dconv_mode": 0,
    "rewrite": False,
    "bottom_channels": 16,
}
TINY_SEGMENT = Fraction(1)
TINY_WINDOW = 44100


def tiny(seed: int) -> HTDemucs:
    torch.manual_seed(seed)
    return HTDemucs(sources=FOUR, segment=TINY_SEGMENT, **TINY).eval()


def windows(n: int, length: int = TINY_WINDOW, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, length)).astype(np.float32)


@pytest.fixture(scope="module")
def inductor_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Inductor's cache in pytest's cache dir (kept across runs), for this module only."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    cache = getattr(request.config, "cache", None)
    path = cache.mkdir("torchinductor") if cache else tmp_path_factory.mktemp("torchinductor")
    with temporary_cache_dir(str(path)):
        yield path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bag() -> BagOfModels:
    return BagOfModels([tiny(1), tiny(2)], weights=[[1.0, 0.5, 0.25, 0.0], [0.5, 1.0, 0.75, 2.0]])


@pytest.fixture(scope="module")
def compiled_bag(bag: BagOfModels, inductor_cache: Path) -> DemucsSeparator:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count is compiled in: the tests' own
    try:
        return DemucsSeparator("tiny bag", bag, "cpu", compile_models="on")
    finally:
        torch.set_num_threads(before)


# --- compiled equals eager --------------------------------------------------------------------


def test_every_model_of_a_bag_is_compiled_without_warnings(compiled_bag: DemucsSeparator) -> None:
    assert all(isinstance(r, CompiledHTDemucs) for r in compiled_bag.runners)
    assert compiled_bag.load_warnings == []


def test_compiled_bag_equals_the_eager_one(compiled_bag: DemucsSeparator, bag: BagOfModels) -> None:
    eager = DemucsSeparator("tiny bag", bag, "cpu", compile_models="off")
    assert eager.runners == eager.models
    x = windows(1)
    ours, warnings = compiled_bag.separate_with_warnings(x)
    assert warnings == []
    assert relative_error(ours, eager.separate(x)) <= CHECK_TOLERANCE


def test_compiled_forward_equals_eager_one_window_at_a_time(
    compiled_bag: DemucsSeparator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch goes through the compiled core one window at a time; with autograd on (or
    another length) the eager model runs instead, so the compiled shape never changes."""
    runner = compiled_bag.runners[0]
    calls = []
    forward_one = runner.forward_one
    monkeypatch.setattr(runner, "forward_one", lambda x: calls.append(x.shape) or forward_one(x))
    x = torch.from_numpy(windows(2, seed=1))
    with torch.no_grad():
        ours, eager = runner(x), runner.model(x)
    assert calls == [(1, 2, TINY_WINDOW)] * 2
    assert float((ours - eager).abs().max() / eager.abs().max()) <= CHECK_TOLERANCE
    runner(x[:1])  # autograd on: eager
    with torch.no_grad():
        runner(x[:1, :, : TINY_WINDOW // 2])  # shorter: eager, padded as HTDemucs does
    assert len(calls) == 2


# --- falling back to eager --------------------------------------------------------------------


def test_a_failing_compile_leaves_the_model_eager_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, inductor_cache: Path
) -> None:
    """An op the compiler cannot take (here a forced graph break under fullgraph=True)."""
    core_forward = HTDemucsCore.forward

    def unsupported(self, mag, mix):
        torch._dynamo.graph_break()
        return core_forward(self, mag, mix)

    monkeypatch.setattr(HTDemucsCore, "forward", unsupported)
    model = tiny(3)
    separator = DemucsSeparator("tiny", model, "cpu", compile_models="on")
    assert separator.runners == [model]
    x = windows(1, seed=2)
    out, warnings = separator.separate_with_warnings(x)
    assert len(warnings) == 1 and "compiling 1 of 1 model(s) failed" in warnings[0]
    assert "eager" in warnings[0]
    with torch.no_grad():
        assert np.array_equal(out, model(torch.from_numpy(x)).numpy())


def test_a_mismatch_found_by_the_check_is_a_failed_compile(
    monkeypatch: pytest.MonkeyPatch, inductor_cache: Path
) -> None:
    monkeypatch.setattr(compiled, "CHECK_TOLERANCE", -1.0)  # no result can pass
    runners, warnings = compile_for_device([tiny(4)], "cpu", "on")
    assert not isinstance(runners[0], CompiledHTDemucs)
    assert "differs from the eager one" in warnings[0]


def test_without_a_compiler_auto_stays_eager_and_on_warns() -> None:
    from torch._inductor import config

    model = tiny(5)
    # config.patch, not monkeypatch: undoing a monkeypatch deletes (hides) inductor's option
    with config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        assert compiled.c_compiler() is None
        assert compile_for_device([model], "cpu", "auto") == ([model], [])
        runners, warnings = compile_for_device([model], "cpu", "on")
    assert runners == [model] and "no C++ compiler" in warnings[0]


def test_the_setting() -> None:
    assert should_compile("off", "cpu")[0] is False
    assert should_compile("auto", "cuda")[0] is False
    assert should_compile("AUTO", "cpu")[0] is (compiled.c_compiler() is not None)
    with pytest.raises(ValueError, match="auto, on, off"):
        should_compile("yes", "cpu")


def test_models_other_than_htdemucs_stay_eager() -> None:
    from demucs.hdemucs import HDemucs

    hdemucs = HDemucs(sources=FOUR, channels=4)
    wiener = HTDemucs(sources=FOUR, segment=TINY_SEGMENT, cac=False, **TINY)
    assert compiled.supports(hdemucs)[0] is False
    assert compiled.supports(wiener)[0] is False
    assert compile_for_device([hdemucs, wiener], "cpu", "on") == ([hdemucs, wiener], [])


def test_inductor_cache_goes_under_the_models_dir_unless_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    assert use_inductor_cache(tmp_path / "models") == tmp_path / "models" / "torchinductor"
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, str(tmp_path / "mine"))
    assert use_inductor_cache(tmp_path / "models") == tmp_path / "mine"


def test_inductor_cache_stays_at_inductors_default_where_the_models_dir_cannot_hold_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(INDUCTOR_CACHE_ENV, raising=False)
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("a file where the models dir should be")
    assert use_inductor_cache(not_a_dir) is None
    assert INDUCTOR_CACHE_ENV not in os.environ


# --- full size --------------------------------------------------------------------------------


@pytest.mark.slow
def test_full_size_htdemucs_compiled_equals_eager(inductor_cache: Path) -> None:
    """htdemucs as released (random weights) on real music: the compiled separator's chunked
    result equals the eager one's (which equals `separate_tensor`, see test_demucs_separator)."""
    from test.separation_fixtures import htdemucs, separate_in_chunks

    music = real_music(10.0)
    if music is None:
        pytest.skip("the shared test music is missing")
    model = htdemucs(FOUR, 12, **FULL)
    compiled_sep = DemucsSeparator("htdemucs", model, compile_models="on")
    eager_sep = DemucsSeparator("htdemucs", model, compile_models="off")
    fast = compiled_sep.runners[0]
    assert isinstance(fast, CompiledHTDemucs)
    window = torch.from_numpy(music[None, :, :343980].copy())
    with torch.no_grad():
        assert relative_error(fast(window).numpy(), model(window).numpy()) <= CHECK_TOLERANCE
    ours = separate_in_chunks(compiled_sep, music)
    assert relative_error(ours, separate_in_chunks(eager_sep, music)) <= TOLERANCE / 10
