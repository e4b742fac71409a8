"""Old name of tests/support/trainer.py, the same module object under both names.

Kept only because tests/test_trainer_train.py (uncommitted changes by another
engineer at the time of the move) still imports `tests.trainer_support`; once it
imports `tests.support.trainer`, delete this file and its entry in
tests/test_layout.py's LEGACY_HELPER_IMPORTS.
"""

import sys

from tests.support import trainer

sys.modules[__name__] = trainer
