"""``python -m siglip`` runs the ``siglip`` command."""

import sys

from .cli import main

sys.exit(main())
