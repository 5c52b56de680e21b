"""`python -m ussd_gateway.cli`."""

from ussd_gateway.cli import main

raise SystemExit(main())
