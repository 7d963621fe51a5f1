"""The guard after a promotion that kept the old colour warm: what to guard, judging metrics, retiring the warm colour."""
