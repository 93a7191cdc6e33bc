"""`python3 -m harness ...` is `smmu-harness ...`."""
import sys

from .cli import main

sys.exit(main())
