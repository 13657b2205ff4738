"""The store's own channel: a message left for the member at every till of the chain.

Sending it puts it in the member's directory entry (``till_messages``, ``MemberEntry.messages``)
and gives the member a new change number, so every store gets it with its next directory page:
the pole display greets the member with it when they are identified, the receipt prints it
whole with its coupon's QR. The store that prints it reports ``member.message_shown``; the hub
marks the message delivered and takes it out of the entry, so no other till prints it again
(two stores offline at once may each print it once: the member holds two slips of one
message, never two coupons). The member is standing at the till: no consent to contact them
is needed, and quiet hours do not apply (the dispatcher knows, ``CONSENT_OF``).
"""

from __future__ import annotations

from collections.abc import Callable

from hub.core.db import HubDatabase, Tx
from hub.members import directory
from hub.notify.channel import Outgoing, Refused, Sent

MAX_TEXT = 500  # ``protocol.sync.TillMessage.text``


class StoreChannel:
    name = "store"

    def __init__(self, db: HubDatabase, now_ms: Callable[[], int],
                 moved: Callable[[], None]) -> None:
        self.db = db
        self.now_ms = now_ms
        self.moved = moved  # the fleet is told the directory moved

    async def send(self, message: Outgoing) -> Sent:
        if len(message.text) > MAX_TEXT:
            raise Refused(f"a till message is at most {MAX_TEXT} characters")
        now = self.now_ms()

        def leave(tx: Tx) -> None:
            tx.execute("INSERT INTO till_messages(member_id, key, text, coupon_code, created_ms)"
                       " VALUES (?, ?, ?, ?, ?) ON CONFLICT(member_id, key) DO NOTHING",
                       (message.member_id, message.key, message.text,
                        message.params.get("coupon_code"), now))
            directory.touch(tx, [message.member_id])

        await self.db.transaction(leave)
        self.moved()
        return Sent()

    @staticmethod
    def check(purpose: str, text: str) -> None:
        if len(text) > MAX_TEXT:
            raise ValueError(f"a till message is at most {MAX_TEXT} characters")

    async def aclose(self) -> None:
        pass
