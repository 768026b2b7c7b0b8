"""The control plane: runs, the frozen requirements and architecture, the task graph, task
and run transitions, evidence and artifacts. Imports only the core (``planegate.tools.*``) and
``planegate.store``."""
