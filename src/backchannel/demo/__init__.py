"""``backchannel demo``: a whole voice call on the offline stack, caller included."""
