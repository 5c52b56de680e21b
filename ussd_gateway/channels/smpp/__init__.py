"""The SMPP channel: PDU codec (over smpplib), GSM-7/UCS-2 text, a sans-IO ESME
session, the asyncio link, and the channel that maps USSD and SMS onto hops."""
