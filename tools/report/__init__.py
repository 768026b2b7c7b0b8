"""What people read: get_status, markdown views of the ledger, the run report, and accepting a
run (which writes the report). The top of ``planegate.tools``."""
