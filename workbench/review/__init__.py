"""Human preference evaluation (``workbench review``): a local, blind web page where reviewers compare two
models' videos of the same prompts, a crash-safe vote store, and the statistics of the votes.

- ``session.py``: what is reviewed (the pairs of videos of one ``--compare-base`` evaluation folder or of two
  folders of the same suite), the reviewers and their secret tokens, kept in ``DIR/review.json``;
- ``store.py``: the votes, one SQLite row each (WAL, synchronous commit before the answer);
- ``app.py``: the Starlette app the reviewers' browsers talk to (``static/``: the page, no CDN);
- ``stats.py``: win rate, Wilson and bootstrap intervals, Cohen's and Fleiss' kappa, Bradley-Terry;
- ``summary.py``: ``summary.json`` / ``summary.md`` / ``votes.jsonl`` and their logging to MLflow.
"""
