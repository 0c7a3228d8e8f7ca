"""Rendering: terminal/markdown tables, charts and the jinja2 templates, for report, bench and sweep.

format    cell formatting ("n/a" for a missing figure)      tables    markdown and rich tables
charts    matplotlib PNGs (report, bench)                     html      jinja2 templates/ + inline PNGs
report    report.md / report.html from metrics.json          bench     bench.md / terminal / bench.html
summary   the plain-text summary `lcpipe run` prints          progress  the one rich progress bar
inspect   `lcpipe inspect` as text                           options   `lcpipe stages`: every option, typed, with help
"""
