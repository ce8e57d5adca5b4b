"""``python -m compressor``: the same CLI as the ``compressor`` command."""

import sys

from compressor.cli import main

sys.exit(main())
