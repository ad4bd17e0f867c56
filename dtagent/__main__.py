"""``python -m dtagent`` runs the CLI."""

from dtagent.cli import main

raise SystemExit(main())
