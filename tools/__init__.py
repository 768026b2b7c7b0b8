"""planegate's domain, by plane: ``control`` (runs, freezes, the task graph, evidence),
``execution`` (worktrees, executors, jobs, checks), ``gates`` (the rules and acceptance),
``review`` (packets and reviewers) and ``report`` (status, views, the run report), over a small
core (``env``, ``errors``, ``models``, ``config``, ``names``, ``policy``, ``globs``, ``gitrepo``).

Imports point down only (README, Code map); nothing here imports MCP.
"""
