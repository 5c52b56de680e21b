"""The resume offer belongs to the dialogue it was made in: another dial of the same
subscriber in between must not turn the answer to the offer into a menu choice."""

from __future__ import annotations

from helpers import Phone

EXPIRED = "het han"


class TestResumeOfferOwnership:
    async def test_an_answer_to_a_superseded_offer_is_not_a_menu_choice(self, gateway_client, dialect) -> None:  # type: ignore[no-untyped-def]
        """Dropped in the buy menu, redialled (offered to resume), dialled again from
        another session before answering: the first offer's "2" (start over) ends
        that session; it never buys or browses from the main menu."""
        dropped = Phone(gateway_client, dialect)
        await dropped.dial()
        assert "Goi Data" in (await dropped.walk("2")).text
        await dropped.abort()
        offered = Phone(gateway_client, dialect)
        offer = await offered.dial()
        assert "Tiep tuc" in offer.text
        newer = Phone(gateway_client, dialect)
        await newer.dial()
        stale = await offered.send("2")
        assert stale.end and EXPIRED in stale.text, stale.text
        assert "Mua goi" not in stale.text

    async def test_the_newest_dial_keeps_its_own_dialogue(self, gateway_client, dialect) -> None:  # type: ignore[no-untyped-def]
        """The stale answer changes nothing for the dialogue that replaced it."""
        dropped = Phone(gateway_client, dialect)
        await dropped.dial()
        await dropped.walk("2")
        await dropped.abort()
        offered = Phone(gateway_client, dialect)
        await offered.dial()
        newer = Phone(gateway_client, dialect)
        newest = await newer.dial()
        await offered.send("1")
        again = await newer.send("1" if "Tiep tuc" in newest.text else "2")
        assert not again.end, again.text
