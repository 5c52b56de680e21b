"""The number rules come from `[msisdn]`: another country's national form, lengths,
and ASCII digits only, whatever the configuration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import Phone, make_settings

from ussd_gateway.app.config import ConfigError, load_settings
from ussd_gateway.app.server import create_app
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.msisdn import MsisdnRules, configure_msisdn, normalise_msisdn


@pytest.fixture(autouse=True)
def default_rules() -> Iterator[None]:
    yield
    configure_msisdn(MsisdnRules())  # the next test starts from the defaults


FRANCE = {"country_code": "33", "national_prefix": "0", "min_length": 11, "max_length": 11}


async def test_a_configured_country_makes_one_subscriber_of_its_national_and_international_forms(aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(make_settings("", msisdn=FRANCE)))
    national = Phone(client, "json", msisdn="06 12 34 56 78")
    await national.dial()
    assert "Goi Data" in (await national.walk("2", "1")).text
    # The same subscriber dialling again in the international form is offered the
    # dialogue back: one number, one subscriber.
    international = Phone(client, "json", msisdn="+33612345678")
    assert "1.Tiep tuc" in (await international.dial()).text
    # A number outside the configured lengths is refused, with the country's examples.
    wrong = Phone(client, "json", msisdn="+336123456789")
    screen = await wrong.dial()
    assert screen.status == 400 and "is not an MSISDN" in screen.text and "+33901234567" in screen.text


def test_the_defaults_are_vietnams() -> None:
    configure_msisdn(MsisdnRules())
    assert normalise_msisdn("0901234567") == normalise_msisdn("+84901234567") == "84901234567"


@pytest.mark.parametrize("raw", ["٠٦١٢٣٤٥٦٧٨", "０６１２３４５６７８", "06１2345678"])
def test_only_ascii_digits_whatever_the_country(raw: str) -> None:
    configure_msisdn(MsisdnRules("33", "0", 11, 11))
    with pytest.raises(BadRequest):
        normalise_msisdn(raw)


@pytest.mark.parametrize(
    "section, message",
    [
        ('country_code = "084"', "country_code must be 1 to 3 digits"),
        ('country_code = "8a"', "country_code must be 1 to 3 digits"),
        ('national_prefix = "00"', "international prefix"),
        ("min_length = 16\nmax_length = 16", "lengths must satisfy"),
        ("min_length = 12\nmax_length = 10", "lengths must satisfy"),
    ],
)
def test_bad_rules_are_refused_by_name(tmp_path, section: str, message: str) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text(f"[msisdn]\n{section}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_the_environment_sets_the_rules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    settings = load_settings(config, environ={"USSD_MSISDN_COUNTRY_CODE": "44"})
    assert settings.msisdn.country_code == "44"
