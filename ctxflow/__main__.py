"""``python -m ctxflow`` runs the ``ctxflow`` command."""

import sys

from ctxflow.cli import main

sys.exit(main())
