"""Entry point of every array task: ``python -m hpc_forget.worker MANIFEST``.

The generated sbatch scripts (and their golden files) name this module; the worker itself
lives in :mod:`hpc_forget.cluster.worker`.
"""

import sys

from hpc_forget.cluster.worker import main

if __name__ == "__main__":
    sys.exit(main())
