"""``python -m siglip.train`` and ``torchrun --nproc_per_node N -m siglip.train``: see ``siglip train --help``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
