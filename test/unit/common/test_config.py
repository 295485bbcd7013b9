"""Settings: a service's URL follows its port setting unless its `*_URLS` names replicas."""

from common.config import DOWNSTREAM_SERVICES, Settings


def test_urls_follow_the_port_settings():
    ports = {f"{name}_port": 9100 + i for i, name in enumerate(DOWNSTREAM_SERVICES)}
    urls = Settings(_env_file=None, **ports).urls
    assert urls == {n: [f"http://127.0.0.1:{ports[f'{n}_port']}"] for n in DOWNSTREAM_SERVICES}


def test_urls_setting_wins_over_the_port():
    settings = Settings(
        _env_file=None,
        predictor_port=9105,
        predictor_urls="http://a:8005, http://b:8005/",
        bind_host="10.0.0.7",
    )
    assert settings.urls["predictor"] == ["http://a:8005", "http://b:8005"]
    # a service bound to one address is reached there; one bound to all, on loopback
    assert settings.urls["fuser"] == ["http://10.0.0.7:8006"]
    assert Settings(_env_file=None, bind_host="0.0.0.0").urls["fft"] == ["http://127.0.0.1:8001"]


def test_urls_from_the_environment(monkeypatch):
    for name in DOWNSTREAM_SERVICES:
        monkeypatch.delenv(f"{name.upper()}_URLS", raising=False)
    monkeypatch.setenv("CQT_PORT", "9102")
    monkeypatch.setenv("TONE_URLS", "http://tone:8004")
    urls = Settings(_env_file=None).urls
    assert urls["cqt"] == ["http://127.0.0.1:9102"] and urls["tone"] == ["http://tone:8004"]
