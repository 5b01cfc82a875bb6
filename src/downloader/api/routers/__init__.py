"""One router per resource of the REST API: the queue and its items, the processor, the
event stream, metrics, and health."""
