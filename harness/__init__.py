"""The host side of smmu-harness: vCPUs on Unicorn, the board, the simulated host and the command line."""
from . import ucload as _ucload

_ucload.install()       # the first `import unicorn` without the modules its loader drops (harness/ucload.py)
