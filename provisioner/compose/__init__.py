"""The compose engine: `provision up/down/ps` turn a parsed Stack into containers on this host.

It sits above stack/ (the model) and containers/ (what runs one container), and is the only
place the two meet.
"""
