"""``python -m ipusim_cli``: the same as the ``ipusim`` command."""
import sys

from . import main

sys.exit(main())
