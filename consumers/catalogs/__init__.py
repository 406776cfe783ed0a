"""The live catalog: the catalog topic (publish, read), the file watch, and the agent registry.

published.py   the catalog record on ``<prefix>catalog``: publish (validated), read (validated again)
source.py      where a worker's catalog comes from (file or topic), checked between batches
registry.py    agents announcing themselves on ``<prefix>registry`` with heartbeats
live.py        the catalog a router worker decides with: its source plus the live registered agents
"""
