"""The shared vocabulary every layer speaks: `Hop` and `Reply`, the errors, MSISDN
rules, wire-input checks, logging and metrics. It imports nothing of the project."""
