"""Care campaigns and tracked outbound SMS.

A campaign is a message template in three languages sent from a brandname or short
code to a target (a CSV of MSISDNs or a filter over the subscriber backend), under the
rules that protect subscribers (a frequency cap across campaigns, quiet hours, the
`TC` opt-out, never twice to one subscriber), paced by the SMPP binds' `max_tps`.
Every SMS a campaign (or `POST /sms/send`) queues is tracked in the SMS ledger from
queued to sent to delivered, failed or expired, by its delivery receipt.

The layer sits above the services (it adds the opt-out keywords to their router) and
below the channels: it only queues SMS into the session store and keeps their states;
the SMPP channel sends them and reports back (`ledger.SmsLedger`).
Modules: `settings`, `sizing` (SMS parts), `model` (campaigns, targets, rendering),
`protect` (quiet hours, opt-outs), `ledger` (SMS states, receipts, the send API),
`runner` (the campaigns in Redis and the loop that sends them).
"""
