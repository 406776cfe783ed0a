"""``python -m routeyard.consumers.cli``: the ``routeyard`` command."""

from routeyard.consumers.cli.main import main

raise SystemExit(main())
