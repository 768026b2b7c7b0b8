"""The gates: pure rules (``gates``), the facts they judge (``facts``), secret scanning, and
acceptance of tasks and runs behind them. Imports the control plane and the core; never the
execution plane, reviews or reports."""
