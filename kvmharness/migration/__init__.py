"""Live migration of the micro-VM, and predicting it: the pre-copy model,
the stream format, both ends, the QMP job, and a shaped network testbed."""
