"""``python -m injector.cli``: the same as the ``meshinject`` console script."""

from injector.cli import main

raise SystemExit(main())
