"""planegate's domain: runs, freezes, the task graph, dispatch, checks, gates, reviews, acceptance.

Pure functions over the ledger (``planegate.store``), git (``gitrepo``) and the reviewer
backends (``planegate.bridge``); nothing here imports MCP.
"""
