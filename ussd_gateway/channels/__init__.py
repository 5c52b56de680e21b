"""Channel adapters: each turns a gateway's wire format into `Hop`s and renders the
`Reply` back. HTTP dialects in `http`, SMPP binds in `smpp`; neither imports the other."""
