"""`python -m rl.bench NAME ...`: see rl/bench/__init__.py."""
import sys

from rl.bench import main

sys.exit(main())
