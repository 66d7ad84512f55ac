"""``python -m zipar.cli`` (e.g. under ``accelerate launch -m zipar.cli sample ...``)."""
import sys

from . import main

sys.exit(main())
