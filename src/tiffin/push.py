"""Push modes (Feast's numbering). Pushing itself arrives with the feature server."""

import enum


class PushMode(enum.IntEnum):
    ONLINE = 1
    OFFLINE = 2
    ONLINE_AND_OFFLINE = 3
