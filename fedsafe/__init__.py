"""fedsafe: safety attacks and defenses for federated instruction tuning.

Importing fedsafe silences the third-party warnings listed in fedsafe/logs.py first, so the ones
raised while its dependencies load (ServerApp, ClientApp actors, the CLI) are silenced too.
"""

from fedsafe.logs import silence_known_warnings

silence_known_warnings()
