"""`python -m ccfs` (and `torchrun -m ccfs`): the ccfs command."""
import sys

from ccfs.cli import main

sys.exit(main())
