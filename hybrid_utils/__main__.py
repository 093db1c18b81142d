"""``python -m hybrid_utils <command> ...``: the study's command line, :mod:`hybrid_utils.study.cli`."""

import sys

if __name__ == "__main__":
    from hybrid_utils.study.cli import main

    sys.exit(main())
