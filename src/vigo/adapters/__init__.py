"""Every side effect of vigo lives here: each module builds argv and parses output.

`run.py` is the one place that starts processes; the other adapters call it.
"""
