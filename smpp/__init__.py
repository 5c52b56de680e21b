"""The SMPP channel (see the SMPP issue); empty until then."""
