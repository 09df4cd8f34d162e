"""Exit codes of the `seed` and `work` commands, shared with the Pulumi program."""

#: The command did what it was asked, or the queue was already empty.
OK = 0
#: An item's work failed; the item went back to the queue or to the dead-letter queue.
ITEM_FAILED = 1
#: A setting or the seed input is invalid; nothing was published or taken.
BAD_CONFIG = 2
#: The broker could not be reached before the connect deadline.
BROKER_UNREACHABLE = 3
#: The broker failed the run midway: connection lost, publish nacked or unroutable.
BROKER_FAILED = 4
#: Stopped by SIGTERM (128 + 15); the in-flight item went back to the queue.
TERMINATED = 143
