"""Session set-up shared by every test."""


def pytest_sessionstart(session) -> None:
    """Compile librosa's numba kernels once (each warm-up holds the machine's compile lock)
    before any test starts services: they then load a whole cache instead of compiling side by
    side, and this process does not compile them while a service does (numba/numba#10128, see
    common/jit.py)."""
    from transforms import cqt, fft

    fft.warm_up()
    cqt.warm_up()
