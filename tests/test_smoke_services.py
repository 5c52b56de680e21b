"""A first walk through the main menu on every dialect and store."""

from helpers import Phone


class TestMainMenu:
    async def test_dial_shows_the_eight_services_in_order(self, phone: Phone) -> None:
        """*090# opens the main menu: account, buy, bundle, KNDL, VAS, feedback, language,
        top-up and promotions."""
        screen = await phone.dial()
        assert not screen.end
        lines = screen.text.split("\n")
        assert [line.split(".")[0] for line in lines[1:]] == ["1", "2", "3", "4", "5", "6", "7", "8"]
        assert "Tra cuu tai khoan" in lines[1] and "Ngon ngu" in lines[7] and "Nap the" in lines[8]

    async def test_balance_after_a_purchase(self, phone: Phone) -> None:
        """Buying D15 debits 15.000d from 200.000d exactly once, even when retried."""
        await phone.dial()
        screen = await phone.walk("2", "1", "1", "1")
        assert screen.end and "185.000d" in screen.text
        again = await phone.repeat()
        assert again.text == screen.text
        await phone.dial("*101#")
        assert "185.000d" in (await phone.dial("*101#")).text
