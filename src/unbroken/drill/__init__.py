"""`unbroken drill`: prove a zero-downtime reload with numbers, on this machine.

    run.py       I/O: start (or attach to) a service, drive load, perform the reloads
    releases.py  writes releases of the bundled example app (a slow one, a broken one)
    analysis.py  pure: samples + reload records -> summaries, a per-second timeline, a verdict
    html.py      pure: the self-contained HTML report with inline SVG charts

The analysis and the report never touch a socket, so they are tested with plain data.
"""
