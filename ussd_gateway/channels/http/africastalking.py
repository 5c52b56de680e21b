"""Africa's Talking USSD callbacks: a form POST in, `CON …` / `END …` text out.

`text` is the `*`-joined history of every input of the session so far; the dispatcher
takes what is new from it. The hop key is the whole history, so a gateway retry of the
same hop is recognised and answered from the saved reply.
"""

from __future__ import annotations

from aiohttp import web

from ussd_gateway.channels.http.body import read_form
from ussd_gateway.core.errors import BadRequest
from ussd_gateway.core.hop import Hop, HopKind, Reply
from ussd_gateway.core.msisdn import normalise_msisdn

from ussd_gateway.core.inputs import check_input, check_session_id, split_service_code

NAME = "africastalking"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def parse(request: web.Request) -> Hop:
    """Read the callback form. Raises BadRequest with the reason."""
    if request.content_type not in _FORM_TYPES:
        raise BadRequest(f"expected a form post (application/x-www-form-urlencoded), got {request.content_type or 'no content type'}")
    form = await read_form(request)
    session_id = form.get("sessionId")
    service_code = form.get("serviceCode")
    phone = form.get("phoneNumber")
    text = form.get("text", "")
    # Each field a non-empty string (`text` may be empty): one check for the usual form,
    # the reasons worked out only for a refused one.
    if not (type(session_id) is str and type(service_code) is str and type(phone) is str and type(text) is str
            and session_id and service_code and phone):
        _refuse(form)
    code, embedded = split_service_code(service_code)  # type: ignore[arg-type]
    text = check_input(text, "text")  # type: ignore[arg-type]
    if embedded:
        history = "*".join((*embedded, text) if text else embedded)
    else:
        history = text
    return Hop(
        channel=NAME,
        session_id=check_session_id(session_id),  # type: ignore[arg-type]
        msisdn=normalise_msisdn(phone),  # type: ignore[arg-type]
        service_code=code,
        kind=HopKind.CONTINUE if history else HopKind.BEGIN,
        history=history,
        hop_key="t:" + history,
    )


def _refuse(form: dict[str, object]) -> None:
    """Raise BadRequest naming what is wrong with the form's fields."""
    missing = [name for name in ("sessionId", "serviceCode", "phoneNumber") if not form.get(name)]
    if missing:
        raise BadRequest(f"missing form field(s): {', '.join(missing)}")
    for name in ("sessionId", "serviceCode", "phoneNumber", "text"):
        if not isinstance(form.get(name, ""), str):
            raise BadRequest(f"form field {name} must be text, not a file")


_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
"""What `text=…, content_type="text/plain", charset="utf-8"` sets, without its
parsing and setters on every response."""


def render(reply: Reply) -> web.Response:
    prefix = "END " if reply.end else "CON "
    return web.Response(body=(prefix + reply.text).encode(), headers=_TEXT)


def render_error(error: BadRequest) -> web.Response:
    return web.Response(status=400, text=str(error) + "\n", content_type="text/plain")
